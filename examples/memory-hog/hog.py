"""Exceeds its memory limit on purpose: the sandbox kills it (status oom) and it fails cleanly."""

chunks = []
for i in range(64):
    chunks.append(bytearray(16 * 1024 * 1024))  # 16 MiB at a time, up to 1 GiB
    print(f"allocated {(i + 1) * 16} MiB", flush=True)
print("never reached within a 64 MB limit")
