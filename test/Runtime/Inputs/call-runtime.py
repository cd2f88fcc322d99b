"""Calls the kvprec CUDA runtime (argv[1]) through ctypes: `status`
prints kvprecCudaStatus, `capability` kvprecCudaComputeCapability,
`stream` calls mgpuStreamCreate (which aborts without a device)."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
what = sys.argv[2]
if what == "status":
    buffer = ctypes.create_string_buffer(512)
    ok = lib.kvprecCudaStatus(buffer, 512)
    print("status %d: %s" % (ok, buffer.value.decode()))
elif what == "capability":
    print("capability %d" % lib.kvprecCudaComputeCapability())
elif what == "stream":
    lib.mgpuStreamCreate.restype = ctypes.c_void_p
    sys.stdout.flush()
    lib.mgpuStreamCreate()
    print("created a stream")
else:
    sys.exit("unknown call " + what)
