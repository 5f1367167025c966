import hashlib, socket, sys, random
r = random.Random(7); h = hashlib.sha256(); n = int(sys.argv[3])
import time
for _ in range(120):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break
    except OSError:
        time.sleep(1)
chunk = bytes(r.getrandbits(8) for _ in range(1 << 16))
sent = 0
while sent < n:
    b = chunk[: min(len(chunk), n - sent)]
    s.sendall(b); h.update(b); sent += len(b)
s.close(); print(sent, h.hexdigest())
