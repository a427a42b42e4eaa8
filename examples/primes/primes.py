"""CPU job: count the primes below N with a sieve and write them to primes.txt."""

import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
sieve = bytearray([1]) * n
sieve[0:2] = b"\x00\x00"
for i in range(2, int(n**0.5) + 1):
    if sieve[i]:
        sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
primes = [i for i in range(n) if sieve[i]]
with open("primes.txt", "w") as f:
    f.write("\n".join(map(str, primes)) + "\n")
print(f"{len(primes)} primes below {n}; the largest is {primes[-1]}")
