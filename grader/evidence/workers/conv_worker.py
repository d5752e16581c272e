"""Run a student's convolution functions on cases the grader sends one at a time, in a process
where no library convolution exists.

    python -I conv_worker.py REQUEST.json

Started by `grader.evidence.convolution` through `grader.confine.worker.Runner` (never imported by the grader),
confined like a notebook kernel, with one CPU thread. Before the student's code is loaded, this
process takes away what a hand-written convolution must not use, instead of watching for it:

* every operator of torch's dispatcher whose name says convolution (``aten::convolution``,
  ``aten::conv2d``, ``aten::_slow_conv2d_forward``, ``aten::mkldnn_convolution``,
  ``mkldnn::_convolution_pointwise``, the quantized ones...) is given a kernel that raises, for
  every backend it has; the registration's handle is leaked, so nothing can undo it;
* numpy's ``convolve`` and ``correlate`` are replaced wherever numpy keeps them; SciPy, OpenCV,
  scikit-image and astropy are absent (masked in the sandbox, refused on import here as well);
* after a warm-up of the operations a convolution uses (so that nothing is imported or
  initialised lazily during a timed call), a seccomp filter makes ``clone``, ``fork`` and
  ``exec`` fail: no thread and no process can run anything outside these rules.

Then the definitions (``module.py``, re-created from the notebook by `grader.evidence.recreate`) run, and
the process answers requests: the grader writes ``case-K.pt`` in this folder and a line ``K`` on
stdin; this process calls the function and writes its output to ``out-K.pt`` and one JSON line
on the reply pipe. A case is in this process only from its request on, so module-level code never
sees one. Nothing it says decides a point: the grader compares the outputs with its own
``conv2d``, measures the CPU time of each call from outside, and reads an exception's text only
for the public cases, which all come before any hidden one.
"""

import json
import os
import sys
from pathlib import Path

BLOCKED = "a library convolution is not available"  # the grader's exact text comes with the request
MASKED_MODULES = ()  # likewise
_DISPATCH_KEYS = (
    "CPU", "CUDA", "MPS", "XPU", "QuantizedCPU", "QuantizedCUDA", "MkldnnCPU", "SparseCPU", "SparseCUDA",
    "CompositeImplicitAutograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional",
)


def _blocked(*args, **kwargs):
    raise RuntimeError(BLOCKED)


# ------------------------------------------------------------------------------ taking away


def block_torch_convolutions(torch):
    """Give every convolution operator a kernel that raises; returns how many were replaced."""
    import ctypes
    import re
    import warnings

    libraries, count = {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Overriding a previously registered kernel": the point
        for name in torch._C._dispatch_get_all_op_names():
            namespace, _, op = name.partition("::")
            if not re.search(r"conv(?!ert)", op):
                continue
            library = libraries.get(namespace)
            if library is None:
                library = libraries[namespace] = torch._C._dispatch_library("IMPL", namespace, "")
            for key in _DISPATCH_KEYS:
                if torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
                    library.impl(op, key, _blocked)
                    count += 1
    for library in libraries.values():  # leaked on purpose: no reference can reset it
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(library))
    return count


def _numpy_homes(numpy):
    homes = [numpy]
    for name in ("numpy._core.numeric", "numpy._core.multiarray", "numpy._core._multiarray_umath",
                 "numpy.core.numeric", "numpy.core.multiarray", "numpy.core._multiarray_umath"):
        module = sys.modules.get(name)
        if module is not None:
            homes.append(module)
    return homes


def block_numpy_convolutions(numpy):
    """Replace numpy's convolve/correlate wherever numpy keeps them."""
    for home in _numpy_homes(numpy):
        for name in ("convolve", "correlate", "correlate2"):
            if hasattr(home, name):
                setattr(home, name, _blocked)


def numpy_tampered(numpy):
    """Whether something put a numpy convolution back (read by the grader as a reason to take
    points away, never to give them)."""
    return any(
        getattr(home, name) is not _blocked
        for home in _numpy_homes(numpy)
        for name in ("convolve", "correlate", "correlate2")
        if hasattr(home, name)
    )


class _NoConvolutionLibraries:
    """A meta-path finder refusing the masked libraries (they are also absent from the sandbox)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MASKED_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r} (not available to the convolutions)", name=name)
        return None


def no_new_tasks():
    """A seccomp filter: from now on ``clone``, ``fork``, ``vfork`` and ``exec*`` fail with EPERM.

    Returns:
        True when the filter is in force (Linux on x86_64 or aarch64), else False.
    """
    import ctypes
    import platform
    import struct

    known = {
        "x86_64": (0xC000003E, (56, 57, 58, 59, 322, 435)),  # clone fork vfork execve execveat clone3
        "aarch64": (0xC00000B7, (220, 221, 281, 435)),  # clone execve execveat clone3
    }
    if sys.platform != "linux" or platform.machine() not in known:
        return False
    audit_arch, denied = known[platform.machine()]
    load, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050001  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    checks = [(jump_ge, 0x40000000)] if platform.machine() == "x86_64" else []  # x32 numbers
    checks += [(jump_eq, number) for number in denied]
    length = 3 + len(checks) + 2  # load arch, check arch, load nr, checks, allow, deny
    program = [(load, 0, 0, 4), (jump_eq, 0, length - 3, audit_arch), (load, 0, 0, 0)]
    for code, value in checks:
        program.append((code, length - len(program) - 2, 0, value))  # to `deny`
    program += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    raw = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.byref(Program(len(program), ctypes.addressof(raw))), 0, 0) == 0


def warm_up(torch, numpy):
    """Run once what convolutions written by hand use, so that no lazy import or initialisation
    (thread pools, ``torch._dynamo`` behind a decorator...) happens later, inside a timed call
    and after threads are forbidden."""
    from numpy.lib.stride_tricks import as_strided, sliding_window_view

    x = torch.randn(2, 3, 9, 8)
    kernel = torch.randn(4, 3, 3, 2)
    with torch.no_grad():
        cols = torch.nn.functional.unfold(torch.nn.functional.pad(x, (1, 1, 1, 1)), (3, 2), stride=2)  # (N, C*KH*KW, L)
        (kernel.reshape(4, -1) @ cols).sum()
        torch.bmm(cols.transpose(1, 2), kernel.reshape(4, -1).T.expand(2, -1, -1))
        torch.einsum("nchwij,ocij->nohw", x.unfold(2, 3, 1).unfold(3, 2, 1), kernel)
        torch.tensordot(x[:, :, :3, :2], kernel, dims=([1, 2, 3], [1, 2, 3]))
        x.as_strided((2, 3, 7, 7, 3, 2), (*x.stride(), x.stride(2), x.stride(3))).sum()
        torch.zeros(2, 4, 7, 7)[:, :, 1, 1] = (x[:, None, :, :3, :2] * kernel[None]).sum((2, 3, 4))
        x.double().flip(-1).permute(0, 2, 3, 1).contiguous().view(-1).float().clone().numpy()
        torch.from_numpy(numpy.ones((2, 2))).to(torch.float32)
        torch.cat([x, x], dim=1).mean().item()
    with torch.enable_grad():
        y = x.clone().requires_grad_()
        (torch.nn.functional.unfold(y, 2).sum()).backward()  # autograd's engine starts its threads now
    torch.no_grad()(lambda: None)()
    a = numpy.random.default_rng(0).standard_normal((9, 8))
    numpy.einsum("ijkl,kl->ij", sliding_window_view(a, (3, 2)), numpy.ones((3, 2)))
    as_strided(a, (7, 7, 3, 2), a.strides * 2).sum()
    numpy.tensordot(a[:3, :2], numpy.ones((3, 2)))
    (a @ a.T).sum()
    numpy.pad(a, 1).dot(numpy.ones(10))


# ------------------------------------------------------------------------------ answering


def _builtin_name(error):
    """The exception's type name when it is one of Python's own, else a fixed word: a class the
    student made can carry any text in its name."""
    import builtins

    kind = type(error)
    return kind.__name__ if getattr(builtins, kind.__name__, None) is kind else "an exception"


def _as_tensor(torch, numpy, output):
    if isinstance(output, torch.Tensor):
        return output.detach().cpu().to(torch.float64).clone(), ""
    if isinstance(output, (numpy.ndarray, numpy.generic, list, tuple, float, int)):
        try:
            return torch.from_numpy(numpy.array(output, dtype=numpy.float64)), ""
        except Exception:
            return None, "returned something that is not an array of numbers"
    return None, "returned something that is neither a tensor nor an array"


def call(torch, numpy, namespace, request, folder):
    """Run one case; returns the reply (JSON-ready) and writes the output next to it."""
    name, index = request["function"], request["index"]
    function = namespace.get(name)
    if function is None:
        return {"status": "undefined"}
    if not callable(function):
        return {"status": "not_callable"}
    case = torch.load(folder / f"case-{index}.pt", weights_only=True)
    (folder / f"case-{index}.pt").unlink()
    x, kernel, bias = case["x"], case["kernel"], case["bias"]
    options = {"stride": case["stride"], "padding": case["padding"]} if case["stride"] is not None else {}
    if case["numpy"]:
        x, kernel, bias = x.numpy(), kernel.numpy(), float(bias)
    try:
        output = function(x, kernel, bias, **options)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the call failed
        text = (str(error).strip().splitlines() or [""])[0][:200]
        return {"status": "raised", "error_type": _builtin_name(error), "message": text}
    tensor, problem = _as_tensor(torch, numpy, output)
    if tensor is None:
        return {"status": "bad_output", "message": problem}
    torch.save(tensor, folder / f"out-{index}.pt")
    return {"status": "ok"}


def main(request_path):
    folder = Path(request_path).parent
    config = json.loads(Path(request_path).read_text())
    global BLOCKED, MASKED_MODULES
    BLOCKED, MASKED_MODULES = config["blocked_message"], tuple(config["masked_modules"])
    replies = os.fdopen(int(config["reply_fd"]), "w", buffering=1)
    commands = sys.stdin

    def reply(message):
        replies.write(json.dumps(message) + "\n")

    import numpy
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    sys.meta_path.insert(0, _NoConvolutionLibraries())
    warm_up(torch, numpy)
    blocked = block_torch_convolutions(torch)
    block_numpy_convolutions(numpy)
    confined = no_new_tasks()
    reply({"kind": "ready", "blocked_operators": blocked, "no_new_tasks": confined})

    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    source = Path(config["inputs"]["module.py"]).read_text()
    (folder / "module.py").unlink()
    # The definitions and their imports, one statement at a time: one that fails (an import this
    # process does not have) leaves the others defined; the first failure is reported.
    import ast

    first = None
    for statement in ast.parse(source).body:
        try:
            exec(compile(ast.Module([statement], type_ignores=[]), "notebook", "exec"), namespace)
        except BaseException as error:
            first = first or error
    text = (str(first).strip().splitlines() or [""])[0][:200] if first is not None else ""
    reply({"kind": "loaded", "error_type": _builtin_name(first) if first is not None else "", "message": text})
    for line in commands:
        request = json.loads(line)
        answer = call(torch, numpy, namespace, request, folder)
        answer.update(kind="done", index=request["index"], tampered=numpy_tampered(numpy))
        reply(answer)
    replies.flush()
    os._exit(0)  # no atexit handler or thread the student's code left behind runs after this


if __name__ == "__main__":
    main(sys.argv[1])
