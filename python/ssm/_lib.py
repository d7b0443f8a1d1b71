"""ctypes bindings: libssm.so's public API (ssm.h) and libssm-python.so (python/ssm_python.c).

The library is found, in order, at $SSM_LIBRARY (the path of libssm-python.so), in the libdir
that pkg-config gives for ssm, then by the dynamic loader's own search (ldconfig, LD_LIBRARY_PATH).
libssm-python.so links libssm.so, so its symbols are reachable through the same handle.
"""
import ctypes
import os
import shutil
import subprocess

NAME = "libssm-python.so"


def _candidates():
    env = os.environ.get("SSM_LIBRARY")
    if env:
        yield env
        return
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "ssm"], capture_output=True,
                                    text=True, check=True).stdout.strip()
            if libdir and os.path.exists(os.path.join(libdir, NAME)):
                yield os.path.join(libdir, NAME)
        except (OSError, subprocess.CalledProcessError):
            pass
    yield NAME


def _load():
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            errors.append(str(e))
    raise ImportError("ssm: cannot load %s (%s); build ssm with meson and set SSM_LIBRARY to "
                      "build/python/%s, or meson install it" % (NAME, "; ".join(errors), NAME))


lib = _load()

P = ctypes.c_void_p
I32, I64, SZ = ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t
STEP_FN = ctypes.CFUNCTYPE(ctypes.c_int, P, I64, ctypes.c_double, ctypes.c_double, ctypes.c_double)

# name: (restype, argtypes); every ssm_status return is checked by the caller (ssm._check)
_PROTOTYPES = {
    "ssm_last_error": (ctypes.c_char_p, []),
    "ssm_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ssm_set_threads": (None, [ctypes.c_int]),
    "ssm_state_create": (ctypes.c_int, [P, ctypes.c_int, ctypes.POINTER(P)]),
    "ssm_state_free": (None, [P]),
    "ssm_forward": (ctypes.c_int, [P, P, P, ctypes.c_int, ctypes.c_int, P, P]),
    "ssm_forward_score": (ctypes.c_int, [P, P, P, ctypes.c_int, ctypes.c_int, P, P, P]),
    "ssm_model_logits": (ctypes.POINTER(ctypes.c_float), [P]),
    "ssm_model_hidden": (ctypes.c_int, [P, ctypes.c_int, P]),
    "ssm_step": (ctypes.c_int, [P, P, P, P]),
    "ssm_parse_device": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "ssm_model_use_device": (ctypes.c_int, [P, P, ctypes.c_int]),
    "ssmpy_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(P)]),
    "ssmpy_free": (None, [P]),
    "ssmpy_free_buffer": (None, [P]),
    "ssmpy_model": (P, [P]),
    "ssmpy_config": (P, [P]),
    "ssmpy_info": (None, [P, ctypes.POINTER(I64)]),
    "ssmpy_task_name": (ctypes.c_char_p, [P]),
    "ssmpy_symbol": (ctypes.c_char_p, [P]),
    "ssmpy_can_generate": (ctypes.c_int, [P, I32]),
    "ssmpy_encode": (ctypes.c_int, [P, ctypes.c_char_p, SZ, ctypes.POINTER(ctypes.POINTER(I32)),
                                    ctypes.POINTER(SZ)]),
    "ssmpy_decode": (ctypes.c_int, [P, P, SZ, ctypes.POINTER(P), ctypes.POINTER(SZ)]),
    "ssmpy_open_records": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.POINTER(P)]),
    "ssmpy_next_record": (ctypes.c_int, [P, P, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(SZ),
                                         ctypes.POINTER(ctypes.POINTER(I32)),
                                         ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
                                         ctypes.POINTER(ctypes.c_int)]),
    "ssmpy_close_records": (None, [P, P]),
    "ssmpy_train": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                   ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                   STEP_FN, P, ctypes.c_char_p, SZ]),
}
for _name, (_res, _args) in _PROTOTYPES.items():
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _res, _args
