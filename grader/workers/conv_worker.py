"""Run a student's convolution functions on the grader's cases, under a guard, in a fresh process.

    python -I conv_worker.py REQUEST.json

Run by `grader.checks` through `grader.confined` (never imported by the grader), confined like a
notebook kernel. The request holds ``module.py``: the functions' definitions with the helpers and
imports they need, re-created from the notebook by `grader.recreate`; ``cases.pt``: the inputs;
and which functions to call. The student's kernel never sees the cases, and nothing it did can
change what runs here.

Each call runs under a guard that records what the function reaches:

* every ATen operation (a ``TorchDispatchMode``) and every torch function (a ``TorchFunctionMode``):
  a library convolution (``aten::convolution`` and its kin, ``F.conv2d``, ``nn.Conv2d``) is named;
  for ``custom_conv_2d_full`` whether windows were built with ``unfold`` (``aten::im2col`` or
  ``aten::unfold``);
* every Python and C function call (``sys.setprofile``): numpy's ``convolve`` / ``correlate`` and
  anything in ``scipy.signal``, ``scipy.ndimage``, OpenCV or scikit-image is named;
* whether the function removed any of these guards.

Outputs go back as float64 tensors in ``tensors.pt``; the grader compares them with its own
``conv2d`` in its own process. For hidden cases only the kind of failure is kept (an exception's
type, not its text, which the student's code controls).
"""

import json
import signal
import sys
import time
from pathlib import Path

CALL_TIMEOUT_S = 5.0
FORBIDDEN_MODULES = ("/scipy/signal/", "/scipy/ndimage/", "/cv2/", "/skimage/", "/astropy/convolution/")
NUMPY_CONVOLUTIONS = {"convolve", "correlate", "correlate2"}


class CallTimeout(BaseException):
    """Raised in a call that runs past its time (a BaseException: ``except Exception`` misses it)."""


def _alarm(signum, frame):
    raise CallTimeout()


def _timer(seconds):
    """Raise `CallTimeout` in this thread after ``seconds`` (0 cancels); a no-op where there is
    no interval timer (Windows): the grader's own deadline for the worker still holds."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, seconds)


def make_guard():
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    found = {"forbidden": set(), "windows": set()}

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if "conv" in name.lower() and "unfold" not in name:
                module = getattr(func, "__module__", "") or ""
                found["forbidden"].add(f"{module}.{name}".strip(".") if module else name)
            return func(*args, **(kwargs or {}))

    class Operations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name
            if "conv" in name:
                found["forbidden"].add(name)
            if name in ("aten::im2col", "aten::unfold"):
                found["windows"].add(name)
            return func(*args, **(kwargs or {}))

    def profiler(frame, event, arg):
        if event == "c_call":
            name = getattr(arg, "__name__", "")
            module = getattr(arg, "__module__", "") or ""
            if name in NUMPY_CONVOLUTIONS and "numpy" in module:
                found["forbidden"].add(f"numpy.{name}")
        elif event == "call":
            code = frame.f_code
            filename = code.co_filename.replace("\\", "/")
            if any(part in filename for part in FORBIDDEN_MODULES):
                found["forbidden"].add(f"{frame.f_globals.get('__name__', filename)}.{code.co_name}")
            elif code.co_name in NUMPY_CONVOLUTIONS and "/numpy/" in filename:
                found["forbidden"].add(f"numpy.{code.co_name}")

    class Guard:
        def __enter__(self):
            found["forbidden"].clear()
            found["windows"].clear()
            self.functions, self.operations = Functions(), Operations()
            self.functions.__enter__()
            self.operations.__enter__()
            sys.setprofile(profiler)
            self.depth = torch._C._len_torch_dispatch_stack()
            return self

        def __exit__(self, *exc):
            tampered = sys.getprofile() is not profiler
            sys.setprofile(None)
            tampered = tampered or torch._C._len_torch_dispatch_stack() != self.depth
            try:
                self.operations.__exit__(None, None, None)
                self.functions.__exit__(None, None, None)
            except Exception:
                tampered = True
            self.tampered = tampered
            return False

    return Guard, found


def _to_float64(output):
    import numpy as np
    import torch

    if isinstance(output, torch.Tensor):
        return output.detach().cpu().to(torch.float64).clone(), ""
    if isinstance(output, (np.ndarray, np.generic, list, tuple, float, int)):
        try:
            return torch.from_numpy(np.array(output, dtype=np.float64)), ""
        except Exception as error:
            return None, f"returned something that is not an array of numbers ({type(error).__name__})"
    return None, f"returned a {type(output).__module__}.{type(output).__qualname__}, expected an array or tensor"


def run_function(namespace, spec, cases, Guard, found):
    """Call one function on every case; returns its answer and its output tensors."""
    name = spec["name"]
    answer = {"name": name, "defined": name in namespace, "results": [], "forbidden": [], "windows": True}
    outputs = []
    function = namespace.get(name)
    if function is None:
        return answer, outputs
    if not callable(function):
        answer["not_callable"] = type(function).__qualname__
        return answer, outputs
    forbidden = set()
    for case in cases:
        if any(r["status"] == "timeout" for r in answer["results"]):  # one hang is enough to know
            answer["results"].append({"status": "timeout"})
            continue
        x, kernel, bias = case["x"].clone(), case["kernel"].clone(), case["bias"].clone()
        kwargs = {"stride": case["stride"], "padding": case["padding"]} if case.get("stride") is not None else {}
        if spec["numpy_inputs"]:
            x, kernel, bias = x.numpy(), kernel.numpy(), float(bias)
        result = {"status": "ok"}
        output = None
        guard = Guard()
        _timer(CALL_TIMEOUT_S)
        try:
            with guard:
                output = function(x, kernel, bias, **kwargs)
        except CallTimeout:
            result = {"status": "timeout"}
        except BaseException as error:  # SystemExit and KeyboardInterrupt too: the call failed
            result = {"status": "raised", "error_type": type(error).__name__}
            if not case["hidden"]:
                text = str(error).strip().splitlines()
                result["message"] = (text[0] if text else "")[:200]
        finally:
            _timer(0)
        forbidden |= found["forbidden"]
        # A timeout can land in the profiler, which Python then removes: the timeout is the verdict.
        if getattr(guard, "tampered", False) and result["status"] != "timeout":
            forbidden.add("a change to the grader's guard (sys.setprofile or torch's dispatch modes)")
        if result["status"] == "ok":
            if spec.get("needs_windows") and not found["windows"]:
                answer["windows"] = False
            tensor, problem = _to_float64(output)
            if tensor is None:
                result = {"status": "bad_output", "message": problem}
            else:
                result["index"] = len(outputs)
                outputs.append(tensor)
        answer["results"].append(result)
    answer["forbidden"] = sorted(forbidden)
    return answer, outputs


def main(request_path):
    folder = Path(request_path).parent
    request = json.loads(Path(request_path).read_text())
    answers = {"functions": [], "module_error": ""}
    tensors = {}

    def write():
        import torch

        torch.save(tensors, folder / "tensors.pt")
        (folder / "answers.json").write_text(json.dumps(answers))

    import numpy  # noqa: F401  (imported before the student's code: its functions are the ones guarded)
    import torch

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _alarm)
    cases = torch.load(request["inputs"]["cases.pt"], weights_only=True)
    Guard, found = make_guard()
    # The first operation under torch's modes imports what they need (sympy among them: about 2 s
    # of CPU). Done here, before any student code: charged to a student's first call, it made an
    # honest function time out on a busy machine, and the timeout cut that import in half for
    # every function after it.
    with Guard():
        torch.ones(1, 1, 4, 4).unfold(2, 2, 1).sum((2, 3)) * torch.ones(1) + 1
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    source = Path(request["inputs"]["module.py"]).read_text()
    _timer(60.0)
    try:
        exec(compile(source, "notebook", "exec"), namespace)  # the definitions and their imports
    except BaseException as error:
        answers["module_error"] = f"{type(error).__name__}: {str(error).strip()[:200]}"
    finally:
        _timer(0)
    for spec in request["functions"]:
        (folder / "current.json").write_text(json.dumps({"function": spec["name"], "since": time.time()}))
        answer, outputs = run_function(namespace, spec, cases[spec["name"]], Guard, found)
        answers["functions"].append(answer)
        tensors[spec["name"]] = outputs
        write()  # after each function: a later one that hangs or crashes loses only itself
    write()
    sys.stdout.flush()
    import os

    os._exit(0)  # no atexit handler or thread the student's code left behind runs after this


if __name__ == "__main__":
    main(sys.argv[1])
