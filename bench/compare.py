#!/usr/bin/env python3
"""compare.py — neatml_bench side by side with PyTorch, same cases, same machine, one run.

    bench/compare.py [--bench build/neatml_bench] [--backend cpu|cuda] [--reps N]
                     [--case NAME]... [--json-out FILE] [--svg FILE]

Runs each case in `neatml_bench --json` on the backend, then at once in PyTorch doing the same
work (same shapes and element types: float32, or bf16/f16 for the *_bf16/*_f16 cases; fresh
random inputs), and prints one line per case: both medians
and the ratio neatml/PyTorch (time: below 1 means neatml is faster). It also measures the
copy bandwidth of the device in the same run (CPU: a 512 MiB tensor copy; CUDA: a 1 GiB
device-to-device copy; bytes read + written) and gives each memory-bound case's bandwidth
as a percentage of it. On the CPU it also runs neatml_bench's fma_peak (independent vector
FMAs on every thread of neatml's pool, the same thread count PyTorch gets) and gives each
compute-bound case's GFLOP/s (matmul, linear, conv in float32) as a percentage of that peak.

Timing. CPU: wall clock (time.perf_counter) around each call, torch.set_num_threads set to
neatml's thread count. CUDA: torch.cuda.Event around each call (device time), each timed call right behind an
untimed one (--timing queued, the default; neatml_bench likewise: the launch latency into an
idle GPU, a few microseconds, is not counted on either side; --timing idle for that clock), strict float32
(allow_tf32 off for matmul and cuDNN) except in the *_tf32 cases, which turn both on and
restore them after (neatml: math mode TF32; on the CPU neither side runs them). The
conv2d_256f_bf16 case and the NHWC cases (neatml's tensors in NEAT_LAYOUT_NHWC) are timed in
NCHW and channels_last; the ratio uses the faster. Both:
warm-up (at least 2 runs and ~0.1 s), then the median of --reps runs. neatml's own times are
neat_cmdbuf_device_time of each replay of a recorded command buffer: device events around the
work on a GPU (like PyTorch's events), the worker thread's clock around the ops on the CPU.

Which PyTorch. The main peer is the torch of the interpreter that runs this script: run it
with the venv's python to compare against the newest PyTorch from PyPI
(python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy; /tmp/tv/bin/python
bench/compare.py). When that interpreter has no torch, the script re-executes itself under
/usr/bin/python3 (Debian's python3-torch) if that one has it. When /usr/bin/python3 has a
torch other than the main peer's (another directory), that one is run as a second column
(a worker process of this script, each case right after the main peer's; --no-second to skip).

Provenance. --json-out's "meta" holds what a table needs to be reproduced: the neatml commit
(and whether the tree was modified), its build type and C compiler (build/CMakeCache.txt),
the oneDNN version neatml is linked with (dnnl_version() of the library libneatml loads),
and each torch's version, install path, BLAS and oneDNN (torch.__config__.show()).
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_meta import build_info, git_commit, onednn_version, torch_info  # noqa: E402
SYSTEM_PYTHON = "/usr/bin/python3"

MEMORY_BOUND = ("maxpool2x2_32x256x56", "softmax_rows_4096", "sum_all_4096", "add_4096",
                "softmax_rows_4096_bf16", "sum_all_4096_bf16", "add_4096_bf16")
# float32 FMA work: given as a percentage of neatml_bench's fma_peak on the CPU
COMPUTE_BOUND = ("matmul_1024", "matmul_large", "linear_relu_1024", "linear_gelu_1024",
                 "conv2d_256f", "conv2d_bias_relu_256f")
PEAK_CASE = "fma_peak"  # neatml_bench's yardstick, not a row of the table


def find_torch():
    """Import torch, re-executing under /usr/bin/python3 when only that one has it."""
    try:
        import torch  # noqa: F401
        return torch
    except ImportError:
        pass
    # (not by comparing interpreters: a venv's python resolves to /usr/bin/python3's binary)
    if os.path.exists(SYSTEM_PYTHON) and not os.environ.get("NEATML_COMPARE_REEXEC"):
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True)
        if probe.returncode == 0:
            os.environ["NEATML_COMPARE_REEXEC"] = "1"
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    return None


# ---- neatml ----------------------------------------------------------------------------

def run_neatml(args, cases):
    """Run neatml_bench --json on the given cases; returns {case: result object}."""
    cmd = [args.bench, "--json", "--backend", args.backend, "--reps", str(args.reps)]
    if args.backend == "cuda":
        cmd += ["--timing", args.timing]
    for c in cases:
        cmd += ["--case", c]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    except OSError as e:
        sys.exit(f"compare.py: cannot run {args.bench}: {e} (build it first: make, or --bench)")
    rows = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            if "case" in obj:
                rows[obj["case"]] = obj
    if proc.returncode == 2 or not rows:
        sys.exit(f"compare.py: {' '.join(cmd)} exited with status {proc.returncode} and no results")
    return rows


def neatml_case_names(args):
    proc = subprocess.run([args.bench, "--list"], stdout=subprocess.PIPE, text=True)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def fma_peak(args):
    """neatml_bench's fma_peak result object (GFLOP/s of independent FMAs on every thread of
    the CPU pool, isa, clocks), or {"status": ..., "reason": ...} when it has none."""
    if PEAK_CASE not in neatml_case_names(args):
        return {"status": "not available", "reason": f"{args.bench} has no {PEAK_CASE} case"}
    return run_neatml(args, [PEAK_CASE]).get(PEAK_CASE, {"status": "missing"})


# ---- PyTorch cases --------------------------------------------------------------------

class Timer:
    """queued (CUDA): each timed call is made right behind an untimed one, so its start event
    and launches are queued while the GPU still runs the first, as neatml_bench --timing
    queued commits each timed replay behind an untimed one: both clocks then time the
    device's work, not a launch into an idle GPU."""
    def __init__(self, torch, cuda, reps, queued=False):
        self.torch, self.cuda, self.reps, self.queued = torch, cuda, reps, queued and cuda

    def median_ms(self, fn):
        torch = self.torch
        t0 = time.perf_counter()
        for i in range(50):  # warm-up: at least 2 runs and ~0.1 s
            fn()
            if self.cuda:
                torch.cuda.synchronize()
            if i >= 1 and time.perf_counter() - t0 > 0.1:
                break
        times = []
        for _ in range(self.reps):
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                if self.queued:
                    fn()  # untimed: keeps the GPU busy while the timed call is queued
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                a = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - a))
        return statistics.median(times)


def uniform(torch, dev, *shape, lo=-1.0, hi=1.0):
    return torch.rand(*shape, device=dev) * (hi - lo) + lo


def torch_cases(torch, dev, cuda):
    """name -> (setup() -> fn, work per call, unit[, options]). Same shapes, element types and
    units as neatml_bench. options: "tf32" (run with TF32 allowed for matmul and cuDNN, the
    flags restored after), "layouts" ({layout: setup}: each is timed, the faster one is the
    PyTorch time of the row; setup is then None)."""
    F = torch.nn.functional
    f32, bf16 = torch.float32, torch.bfloat16

    def matmul(n, dt=f32, tf32=False):
        def setup():
            a, b = uniform(torch, dev, n, n).to(dt), uniform(torch, dev, n, n).to(dt)
            c = torch.empty(n, n, device=dev, dtype=dt)
            return lambda: torch.matmul(a, b, out=c)
        return setup, 2.0 * n ** 3, "GFLOP/s", {"tf32": tf32}

    def linear(act, tf32=False):
        n = 1024
        def setup():
            x, w, b = uniform(torch, dev, n, n), uniform(torch, dev, n, n), uniform(torch, dev, n)
            if act == "gelu":  # neatml's GELU is the tanh form (include/neatml.h)
                return lambda: F.gelu(F.linear(x, w, b), approximate="tanh")
            return lambda: torch.relu_(F.linear(x, w, b))
        return setup, 2.0 * n ** 3, "GFLOP/s", {"tf32": tf32}

    def conv(dt=f32, bias=False, tf32=False, layouts=False):
        def setup_in(memory_format):
            def setup():
                x = uniform(torch, dev, 32, 64, 56, 56).to(dt).contiguous(memory_format=memory_format)
                w = uniform(torch, dev, 256, 64, 3, 3).to(dt).contiguous(memory_format=memory_format)
                if bias:
                    b = uniform(torch, dev, 256).to(dt)
                    return lambda: torch.relu_(F.conv2d(x, w, b, 1, 1))
                return lambda: F.conv2d(x, w, None, 1, 1)
            return setup
        opts = {"tf32": tf32}
        if layouts:  # the target is PyTorch's best layout: time both, the faster counts
            opts["layouts"] = {"NCHW": setup_in(torch.contiguous_format),
                               "channels_last": setup_in(torch.channels_last)}
        return (None if layouts else setup_in(torch.contiguous_format),
                2.0 * 32 * 256 * 56 * 56 * 64 * 9, "GFLOP/s", opts)

    def maxpool():
        def setup():
            x = uniform(torch, dev, 32, 256, 56, 56)
            return lambda: F.max_pool2d(x, 2, 2)
        return setup, 4.0 * (32 * 256 * 56 * 56 + 32 * 256 * 28 * 28), "GB/s"

    def size(dt):
        return torch.empty(0, dtype=dt).element_size()

    def softmax(dt=f32):
        n = 4096
        def setup():
            x = uniform(torch, dev, n, n, lo=-4, hi=4).to(dt)
            y = torch.empty(n, n, device=dev, dtype=dt)
            try:  # write into a preallocated output when this torch allows it
                torch.softmax(x, 1, out=y)
                return lambda: torch.softmax(x, 1, out=y)
            except (TypeError, RuntimeError):
                return lambda: torch.softmax(x, 1)
        return setup, 2.0 * size(dt) * n * n, "GB/s"

    def sum_all(dt=f32):
        n = 4096
        def setup():
            x = uniform(torch, dev, n, n).to(dt)
            return lambda: torch.sum(x)  # the result in x's type, as neatml's
        return setup, size(dt) * (n * n + 1.0), "GB/s"

    def add(dt=f32):
        n = 4096
        def setup():
            a, b = uniform(torch, dev, n, n).to(dt), uniform(torch, dev, n, n).to(dt)
            c = torch.empty(n, n, device=dev, dtype=dt)
            return lambda: torch.add(a, b, out=c)
        return setup, 3.0 * size(dt) * n * n, "GB/s"

    def mlp_parts():
        bound = 1.0 / 16.0
        x = uniform(torch, dev, 64, 256)
        ws = [uniform(torch, dev, 256, 256, lo=-bound, hi=bound) for _ in range(3)]
        bs = [uniform(torch, dev, 256, lo=-bound, hi=bound) for _ in range(3)]

        def model(h):  # 100 x (3 x (linear, relu), scale) = 700 ops
            for _ in range(100):
                for w, b in zip(ws, bs):
                    h = torch.relu(F.linear(h, w, b))
                h = h * 0.5
            return h
        return x, model

    def mlp_eager():
        def setup():
            x, model = mlp_parts()
            return lambda: model(x)
        return setup, 700.0, "us/op"

    def mlp_graph():
        def setup():
            x, model = mlp_parts()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up before capture, as the docs ask
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(x)
            return graph.replay
        return setup, 700.0, "us/op"

    def lenet(batch, amp=None):
        def setup():
            def param(*shape, fan_in):
                b = fan_in ** -0.5
                return uniform(torch, dev, *shape, lo=-b, hi=b).requires_grad_()
            w1, b1 = param(32, 1, 3, 3, fan_in=9), param(32, fan_in=9)
            w2, b2 = param(64, 32, 3, 3, fan_in=288), param(64, fan_in=288)
            w3, b3 = param(128, 3136, fan_in=3136), param(128, fan_in=3136)
            w4, b4 = param(10, 128, fan_in=128), param(10, fan_in=128)
            params = [w1, b1, w2, b2, w3, b3, w4, b4]
            opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
            images = torch.rand(batch, 1, 28, 28, device=dev)
            labels = torch.randint(0, 10, (batch,), device=dev)

            def forward():
                h = F.max_pool2d(torch.relu(F.conv2d(images, w1, b1, 1, 1)), 2)
                h = F.max_pool2d(torch.relu(F.conv2d(h, w2, b2, 1, 1)), 2)
                h = torch.relu(F.linear(h.reshape(batch, 3136), w3, b3))
                return F.cross_entropy(F.linear(h, w4, b4).float(), labels)

            def step():
                if amp is None:
                    loss = forward()
                else:  # autocast: float32 weights, the layers in amp, the loss in float32
                    with torch.autocast(device_type=dev.type, dtype=amp):
                        loss = forward()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return step
        return setup, float(batch), "img/s"

    large = 8192 if cuda else 2048
    cases = {
        "matmul_1024": matmul(1024),
        "matmul_large": matmul(large),
        "linear_relu_1024": linear("relu"),
        "conv2d_256f": conv(),
        "maxpool2x2_32x256x56": maxpool(),
        "softmax_rows_4096": softmax(),
        "sum_all_4096": sum_all(),
        "add_4096": add(),
        "mlp_700_small_ops": mlp_eager(),
        "lenet_train_step_b128": lenet(128),
        # issue 14: half precision, output in the input's type
        "matmul_1024_bf16": matmul(1024, bf16),
        "matmul_large_bf16": matmul(large, bf16),
        "matmul_large_f16": matmul(large, torch.float16),
        "conv2d_256f_bf16": conv(bf16, layouts=True),
        "conv2d_256f_bf16_nhwc": conv(bf16, layouts=True),
        "conv2d_256f_nhwc": conv(layouts=True),
        "softmax_rows_4096_bf16": softmax(bf16),
        "sum_all_4096_bf16": sum_all(bf16),
        "add_4096_bf16": add(bf16),
        # issue 13: fused epilogues in strict float32
        "linear_gelu_1024": linear("gelu"),
        "conv2d_bias_relu_256f": conv(bias=True),
        "lenet_train_step_b1024": lenet(1024),
        # mixed precision: PyTorch's autocast in bf16 beside neatml's bf16 step
        "lenet_train_step_b128_bf16": lenet(128, bf16),
        "lenet_train_step_b1024_bf16": lenet(1024, bf16),
        # the same steps with neatml's tensors NHWC, beside PyTorch's (NCHW) eager step
        "lenet_train_step_b128_nhwc": lenet(128),
        "lenet_train_step_b128_bf16_nhwc": lenet(128, bf16),
    }
    if cuda:
        cases["mlp_700_small_ops[cuda graph]"] = mlp_graph()
        # TF32 is a CUDA mode: on the CPU neatml reports these not available, and so no
        # PyTorch number either
        cases.update({"matmul_1024_tf32": matmul(1024, tf32=True),
                      "matmul_large_tf32": matmul(large, tf32=True),
                      "linear_relu_1024_tf32": linear("relu", tf32=True),
                      "conv2d_256f_tf32": conv(tf32=True)})
    return cases


@contextlib.contextmanager
def tf32_allowed(torch, on):
    """TF32 on for matmul and cuDNN inside the block (a *_tf32 case), restored after."""
    if not on:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def time_torch_case(torch, timer, case):
    """Median ms of one PyTorch case, and what the row records beside it: with "layouts",
    each layout's median and which one (the faster) the time is."""
    setup, work, unit = case[:3]
    opts = case[3] if len(case) > 3 else {}
    with tf32_allowed(torch, opts.get("tf32", False)):
        if not opts.get("layouts"):
            return timer.median_ms(setup()), {}
        times = {}
        for layout, layout_setup in opts["layouts"].items():
            times[layout] = timer.median_ms(layout_setup())
    best = min(times, key=times.get)
    return times[best], {"torch_layouts_ms": times, "torch_layout": best}


def torch_worker():
    """--torch-worker: the second peer. Reads 'threads reps' then case names from stdin, one a
    line; answers one JSON line each (setup: torch_info; a case: its median ms or error)."""
    torch = find_torch()
    threads, reps = (int(v) for v in sys.stdin.readline().split())
    torch.set_num_threads(threads)
    torch.manual_seed(20240601)
    timer = Timer(torch, False, reps)
    cases = torch_cases(torch, torch.device("cpu"), False)
    print(json.dumps(dict(torch_info(torch), python=sys.executable)), flush=True)
    for line in sys.stdin:
        name = line.strip()
        try:
            if name not in cases:
                raise KeyError("no such case in compare.py's PyTorch cases")
            work, unit = cases[name][1:3]
            ms, extra = time_torch_case(torch, timer, cases[name])
            print(json.dumps(dict({"ms": ms, "rate": rate_of(ms, work, unit)}, **extra)),
                  flush=True)
        except Exception as e:  # noqa: BLE001 (a case this torch lacks: say so, keep going)
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


class SecondPeer:
    """/usr/bin/python3's torch (Debian's build) in a worker process, one case at a time."""
    def __init__(self, threads, reps):
        self.proc = subprocess.Popen([SYSTEM_PYTHON, os.path.abspath(__file__), "--torch-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(f"{threads} {reps}\n")
        self.proc.stdin.flush()
        self.info = json.loads(self.proc.stdout.readline())

    def run(self, name):
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def second_peer_available(main_torch_path):
    """Whether /usr/bin/python3 has a torch other than the main peer's. Compared by the
    torch's directory, not the interpreter: a venv's python resolves to the interpreter it
    was made from, so /tmp/tv/bin/python and /usr/bin/python3 can be one binary with two
    different torches."""
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import os, torch; print(os.path.dirname("
                            "torch.__file__))"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False
    return os.path.realpath(probe.stdout.strip()) != os.path.realpath(main_torch_path or "")


def rate_of(ms, work, unit):
    if unit == "us/op":
        return ms * 1e3 / work
    if unit in ("GFLOP/s", "GB/s"):
        return work / (ms * 1e-3) / 1e9
    return work / (ms * 1e-3)


def copy_bandwidth(torch, dev, cuda, timer):
    """GB/s of one large copy, counting bytes read + written (as the cases do)."""
    nbytes = (1 << 30) if cuda else (512 << 20)
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.zeros(nbytes // 4, device=dev)
    ms = timer.median_ms(lambda: dst.copy_(src))
    del src, dst
    if cuda:
        torch.cuda.empty_cache()  # neatml_bench runs beside this process: leave it the memory
    return 2.0 * nbytes / (ms * 1e-3) / 1e9, nbytes


def device_name(torch, cuda):
    if cuda:
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# ---- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="build/neatml_bench", help="path of neatml_bench")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=10, help="timed runs per case (median)")
    ap.add_argument("--case", action="append", help="run only this case (repeatable)")
    ap.add_argument("--timing", default="queued", choices=["queued", "idle"],
                    help="CUDA: each timed run right behind an untimed one (queued, the default)"
                         " or alone on an idle GPU (idle, the clock before fb81450)")
    ap.add_argument("--json-out", help="write every result to this JSON file")
    ap.add_argument("--svg", help="write the ratio bar chart (SVG) to this file")
    ap.add_argument("--markdown", help="write the results as a Markdown table (for docs)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="run nothing: read the results of an earlier --json-out, write --markdown/--svg")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time each case this many times on each side, alternating (a new "
                         "neatml process each round); the row gives each side's median over "
                         "the rounds and the ratio of those, and lists every round's ratio")
    ap.add_argument("--no-second", action="store_true",
                    help="CPU: do not run /usr/bin/python3's torch as a second column")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker()
        return
    if args.from_json:
        with open(args.from_json) as f:
            write_outputs(args, json.load(f))
        return

    torch = find_torch()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"compare.py: {args.bench} is not an executable (build it first, or --bench)")
    names = [n for n in (args.case or neatml_case_names(args)) if n != PEAK_CASE]
    # The first case also tells the device and the thread count that PyTorch must match.
    neat = run_neatml(args, names[:1] or [PEAK_CASE])
    info = next(iter(neat.values()))
    threads = info.get("threads", 1)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "backend": args.backend,
        "neatml_device": info.get("device"),
        "neatml_threads": threads,
        "reps": args.reps,
        "rounds": args.rounds,
        "timing": args.timing if args.backend == "cuda" else "wall clock per call",
        "python": sys.executable,
        "load_before": os.getloadavg()[0],
        "neatml_commit": git_commit(),
        "onednn": onednn_version(args.bench),
    }
    b = build_info(args.bench)
    meta.update(build_type=b["build_type"], cc=b["cc"])
    if args.backend == "cpu":  # the FMA peak of neatml's threads, before the cases
        peak = neat.get(PEAK_CASE) or fma_peak(args)
        meta["fma_peak"] = peak
        if peak.get("status") == "ok":  # its fastest run: other work only slows a run down
            meta["fma_peak_gflops"] = peak.get("best_rate", peak["rate"])
    results = {"meta": meta, "cases": []}

    cases, timer = {}, None
    if torch is None:
        print("\nPyTorch is missing: neither this Python nor /usr/bin/python3 can import torch."
              "\nneatml's results alone:")
        meta["torch"] = None
    else:
        cuda = args.backend == "cuda"
        if cuda and not torch.cuda.is_available():
            sys.exit("compare.py: --backend cuda, but this PyTorch sees no CUDA device")
        dev = torch.device("cuda" if cuda else "cpu")
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(threads)
        torch.manual_seed(20240601)
        timer = Timer(torch, cuda, args.reps, queued=args.timing == "queued")
        copy_gbps, copy_bytes = copy_bandwidth(torch, dev, cuda, timer)
        meta.update(torch_info(torch))
        meta.update(torch_device=device_name(torch, cuda),
                    torch_threads=None if cuda else torch.get_num_threads(),
                    copy_gbps=copy_gbps, copy_bytes=copy_bytes)
        cases = torch_cases(torch, dev, cuda)

    second = None
    if (torch is not None and args.backend == "cpu" and not args.no_second
            and second_peer_available(meta.get("torch_path"))):
        second = SecondPeer(threads, args.reps)
        meta["second"] = second.info

    print(f"\nneatml: {args.bench} ({args.backend}) on {meta['neatml_device']}, {threads} "
          f"{'threads' if args.backend == 'cpu' else 'SMs'}; commit {meta['neatml_commit']}, "
          f"{meta['build_type']} build, {meta['cc']}, oneDNN {meta['onednn']}")
    if torch is not None:
        print(f"PyTorch {meta['torch']} ({meta['torch_path']}) on {meta['torch_device']}"
              + (f", {meta['torch_threads']} threads, BLAS {meta['torch_blas']}, "
                 f"oneDNN {meta['torch_onednn']}"
                 if args.backend == "cpu" else ", strict float32 (TF32 off but in the *_tf32 cases)"))
        print(f"copy bandwidth ({meta['copy_bytes'] >> 20} MiB copy, read+write): "
              f"{meta['copy_gbps']:.1f} GB/s")
    if "fma_peak" in meta:
        print(fma_peak_line(meta["fma_peak"]))
    if args.backend == "cuda":
        print(f"timing {args.timing}: " + ("each timed run right behind an untimed one, both sides"
              if args.timing == "queued" else "each timed run alone on an idle GPU, both sides"))
    if second is not None:
        i = second.info
        print(f"second column: PyTorch {i['torch']} ({i['torch_path']}), BLAS {i['torch_blas']}, "
              f"oneDNN {i['torch_onednn']}")
    if meta["load_before"] > 0.5:
        print(f"note: load average {meta['load_before']:.2f} at start: other work shares the machine")
    print(f"ratio = neatml time / PyTorch time (below 1: neatml faster); median of {args.reps}; "
          "each case runs in neatml, then in PyTorch, before the next; a case timed in two\n"
          "PyTorch layouts (NCHW, channels_last) compares with the faster one, named on its line\n")
    head = f"{'case':<30} {'neatml ms':>10} {'torch ms':>10} {'ratio':>7}   {'neatml':>10} {'torch':>10} unit"
    if torch is not None or meta.get("fma_peak_gflops"):
        head += "      % of copy bw or FMA peak (neatml / torch)"
    print(head, flush=True)

    for name in names:
        if name not in neat:
            neat.update(run_neatml(args, [name]))
        variants = [name] + [k for k in cases if k.startswith(name + "[")]
        for variant in variants:
            row = compare_case(variant, neat.get(name, {"status": "missing"}),
                               cases.get(variant), timer, meta, torch,
                               torch if torch is not None and args.backend == "cuda" else None)
            if args.rounds > 1 and variant == name and torch is not None:
                more_rounds(row, name, args, cases.get(variant), timer, meta, torch)
            if torch is not None and args.backend == "cuda":
                torch.cuda.empty_cache()
            if second is not None and variant == name and name in cases:
                r2 = second.run(name)
                if "ms" in r2:
                    row.update(torch2_ms=r2["ms"], torch2_rate=r2["rate"])
                    if "torch_layouts_ms" in r2:
                        row.update(torch2_layouts_ms=r2["torch_layouts_ms"],
                                   torch2_layout=r2["torch_layout"])
                    if row.get("neatml_status") == "ok":
                        row["ratio2"] = row["neatml_ms"] / r2["ms"]
                else:
                    row["torch2_error"] = r2.get("error")
            results["cases"].append(row)
            print_row(row)
    meta["load_after"] = os.getloadavg()[0]
    if second is not None:
        second.close()

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json_out}")
    write_outputs(args, results)


def write_outputs(args, results):
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(results))
        print(f"wrote {args.markdown}")
    if args.svg:
        sys.path.insert(0, HERE)
        import plot_ratios
        plot_ratios.write_svg(results, args.svg)
        print(f"wrote {args.svg}")


def compare_case(name, n, torch_case, timer, meta, torch_module, cuda_torch=None):
    """One output row: neatml's result n, PyTorch's run of torch_case, ratio, % of copy.
    With cuda_torch (CUDA runs), also PyTorch's peak allocated memory over the case's setup
    and timed runs (torch.cuda.max_memory_allocated after reset_peak_memory_stats). A case
    with layouts: torch_ms is the faster layout's (named in torch_layout), the ratio uses it,
    and torch_layouts_ms holds each layout's median."""
    row = {"case": name, "neatml_status": n.get("status")}
    n_ok = n.get("status") == "ok"
    if n_ok:
        row.update(neatml_ms=n["median_ms"], neatml_rate=n["rate"], unit=n["unit"],
                   neatml_peak_mem_bytes=n.get("peak_mem_bytes"))
    else:
        row["neatml_reason"] = n.get("reason", "")
    if torch_case is not None:
        work, unit = torch_case[1:3]
        try:
            if cuda_torch is not None:
                cuda_torch.cuda.synchronize()
                cuda_torch.cuda.empty_cache()
                cuda_torch.cuda.reset_peak_memory_stats()
            ms, extra = time_torch_case(torch_module, timer, torch_case)
            row.update(torch_ms=ms, torch_rate=rate_of(ms, work, unit), unit=unit, **extra)
            if cuda_torch is not None:
                row["torch_peak_mem_bytes"] = cuda_torch.cuda.max_memory_allocated()
        except Exception as e:  # an op this torch build lacks: say so, keep going
            row["torch_error"] = f"{type(e).__name__}: {e}"
    if n_ok and "torch_ms" in row:
        row["ratio"] = row["neatml_ms"] / row["torch_ms"]
    percentages(row, name, meta)
    return row


def percentages(row, name, meta):
    """The row's rates as % of the copy bandwidth or the FMA peak measured in the same run."""
    n_ok = row.get("neatml_status") == "ok"
    if name in MEMORY_BOUND and row.get("unit") == "GB/s" and meta.get("copy_gbps"):
        if n_ok:
            row["neatml_pct_copy"] = 100.0 * row["neatml_rate"] / meta["copy_gbps"]
        if "torch_rate" in row:
            row["torch_pct_copy"] = 100.0 * row["torch_rate"] / meta["copy_gbps"]
    if name in COMPUTE_BOUND and row.get("unit") == "GFLOP/s" and meta.get("fma_peak_gflops"):
        if n_ok:
            row["neatml_pct_peak"] = 100.0 * row["neatml_rate"] / meta["fma_peak_gflops"]
        if "torch_rate" in row:
            row["torch_pct_peak"] = 100.0 * row["torch_rate"] / meta["fma_peak_gflops"]


def more_rounds(row, name, args, torch_case, timer, meta, torch_module):
    """--rounds N: N - 1 more rounds of the case, each neatml in a new process and then
    PyTorch, alternating; the row's times become each side's median over the N rounds (the
    first included), its ratio theirs, and row["rounds"] lists every round. On a machine whose
    speed changes from process to process (docs/BENCHMARKS.md: the CPU VM's slow mode), one
    round's ratio says more about that than about the code."""
    if row.get("neatml_status") != "ok" or "torch_ms" not in row or torch_case is None:
        return
    rounds = [(row["neatml_ms"], row["torch_ms"])]
    for _ in range(args.rounds - 1):
        n = run_neatml(args, [name]).get(name, {})
        if n.get("status") != "ok":
            continue
        try:
            t_ms, _ = time_torch_case(torch_module, timer, torch_case)
        except Exception:  # as compare_case: the first round already said why
            continue
        rounds.append((n["median_ms"], t_ms))
    work, unit = torch_case[1:3]
    row["rounds"] = [{"neatml_ms": a, "torch_ms": b, "ratio": a / b} for a, b in rounds]
    row["neatml_ms"] = statistics.median(a for a, _ in rounds)
    row["torch_ms"] = statistics.median(b for _, b in rounds)
    row["neatml_rate"] = rate_of(row["neatml_ms"], work, unit)
    row["torch_rate"] = rate_of(row["torch_ms"], work, unit)
    row["ratio"] = row["neatml_ms"] / row["torch_ms"]
    percentages(row, name, meta)


def fma_peak_line(peak):
    """One line on neatml_bench's fma_peak result: the rate and what it was measured with."""
    if peak.get("status") != "ok":
        return f"FMA peak: {peak.get('status')}: {peak.get('reason', '')}"
    line = (f"FMA peak ({peak.get('isa')}, {peak.get('accumulators')} independent accumulators "
            f"on each of {peak.get('threads')} threads): "
            f"{peak.get('best_rate', peak['rate']):.1f} GFLOP/s (fastest of {peak.get('reps')} "
            f"runs; median {peak['rate']:.1f}")
    if "cpu_time_rate" in peak:
        line += (f", over the threads' CPU time {peak['cpu_time_rate']:.1f}); clock "
                 f"{peak['ghz']:.2f} GHz under the FMAs, {peak['ghz_scalar']:.2f} GHz scalar; "
                 f"{peak['fma_per_cycle']:.2f} FMA/cycle")
    else:
        line += ")"
    return line


def markdown_table(results):
    """The rows as the Markdown table of docs/BENCHMARKS.md."""
    m = results["meta"]
    sec = m.get("second")
    lines = [f"neatml on {m.get('neatml_device')} ({m.get('backend')}, {m.get('neatml_threads')} "
             f"threads) against PyTorch {m.get('torch') or 'missing'}, {m.get('date')}, median of "
             f"{m.get('reps')}; load average {m.get('load_before', 0):.2f} before, "
             f"{m.get('load_after', 0):.2f} after. Copy bandwidth: "
             + (f"{m['copy_gbps']:.1f} GB/s." if m.get("copy_gbps") else "not measured.")
             + (f" {fma_peak_line(m['fma_peak'])}." if m.get("fma_peak") else ""), "",
             f"neatml commit {m.get('neatml_commit')}, {m.get('build_type')} build, "
             f"{m.get('cc')}, oneDNN {m.get('onednn')}. PyTorch {m.get('torch')} from "
             f"`{m.get('torch_path')}`: BLAS {m.get('torch_blas')}, oneDNN {m.get('torch_onednn')}."
             + (f" Second column: PyTorch {sec['torch']} from `{sec['torch_path']}`: BLAS "
                f"{sec['torch_blas']}, oneDNN {sec['torch_onednn']}." if sec else ""), ""]
    extra_h, extra_a = (f" PyTorch {sec['torch']} ms | ratio to it |", "---:|---:|") if sec else ("", "")
    has_peak = bool(m.get("fma_peak_gflops"))
    peak_h, peak_a = (" % of FMA peak (neatml / PyTorch) |", "---|") if has_peak else ("", "")
    lines += ["| case | neatml ms | PyTorch ms | ratio |" + extra_h
              + " neatml rate | PyTorch rate | unit | % of copy bw (neatml / PyTorch) |" + peak_h
              + " peak MB (neatml / PyTorch) |",
              "|---|---:|---:|---:|" + extra_a + "---:|---:|---|---|" + peak_a + "---|"]

    def num(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"
    for r in results["cases"]:
        if r["neatml_status"] != "ok" and "torch_ms" not in r:
            lines.append(f"| {r['case']} | {r['neatml_status']}: {r.get('neatml_reason', '')} "
                         "| | | | | | | |" + (" |" if sec else "") + (" |" if has_peak else ""))
            continue
        pct = ""
        if "neatml_pct_copy" in r or "torch_pct_copy" in r:
            pct = f"{num(r.get('neatml_pct_copy'), '.0f')}% / {num(r.get('torch_pct_copy'), '.0f')}%"
        pct_peak = ""
        if "neatml_pct_peak" in r or "torch_pct_peak" in r:
            pct_peak = (f"{num(r.get('neatml_pct_peak'), '.0f')}% / "
                        f"{num(r.get('torch_pct_peak'), '.0f')}%")
        neat_ms = num(r.get("neatml_ms"), ".3f") if r["neatml_status"] == "ok" else r["neatml_status"]
        extra = (f" {num(r.get('torch2_ms'), '.3f')} | {num(r.get('ratio2'), '.2f')} |"
                 if sec else "")
        lines.append(f"| {r['case']} | {neat_ms} | {num(r.get('torch_ms'), '.3f')} | "
                     f"{num(r.get('ratio'), '.2f')} |{extra} {num(r.get('neatml_rate'), '.1f')} | "
                     f"{num(r.get('torch_rate'), '.1f')} | {r.get('unit', '')} | {pct} |"
                     + (f" {pct_peak} |" if has_peak else "") + f" {peak_mb(r)} |")
    notes = [f"- {r['case']}: PyTorch {layouts_note(r['torch_layouts_ms'], r['torch_layout'])}"
             + (f"; second column {layouts_note(r['torch2_layouts_ms'], r['torch2_layout'])}"
                if "torch2_layouts_ms" in r else "")
             for r in results["cases"] if "torch_layouts_ms" in r]
    if notes:
        lines += ["", "Timed in two PyTorch layouts (the ratio uses the faster one):", ""] + notes
    return "\n".join(lines) + "\n"


def layouts_note(times, best):
    """'NCHW 1.234 ms, channels_last 0.987 ms: ratio vs channels_last'"""
    each = ", ".join(f"{k} {v:.3f} ms" for k, v in times.items())
    return f"{each}: ratio vs {best}"


def peak_mb(r):
    """'neatml / PyTorch' peak memory in MB, '-' for a side not measured."""
    n, t = r.get("neatml_peak_mem_bytes"), r.get("torch_peak_mem_bytes")
    if n is None and t is None:
        return ""
    mb = lambda v: f"{v / 1048576:.1f}" if isinstance(v, (int, float)) else "-"
    return f"{mb(n)} / {mb(t)}"


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-".rjust(int(spec.split(".")[0] or 0))


def print_row(r):
    name = r["case"]
    if r["neatml_status"] != "ok" and "torch_ms" not in r:
        print(f"{name:<30} neatml {r['neatml_status']}: {r.get('neatml_reason', '')}")
        return
    line = (f"{name:<30} {fmt(r.get('neatml_ms'), '10.3f')} {fmt(r.get('torch_ms'), '10.3f')} "
            f"{fmt(r.get('ratio'), '7.2f')}   {fmt(r.get('neatml_rate'), '10.1f')} "
            f"{fmt(r.get('torch_rate'), '10.1f')} {r.get('unit', ''):<8}")
    if "neatml_pct_copy" in r or "torch_pct_copy" in r:
        line += f"  {fmt(r.get('neatml_pct_copy'), '5.0f')}% / {fmt(r.get('torch_pct_copy'), '3.0f')}%"
    if "neatml_pct_peak" in r or "torch_pct_peak" in r:
        line += (f"  {fmt(r.get('neatml_pct_peak'), '5.0f')}% / "
                 f"{fmt(r.get('torch_pct_peak'), '3.0f')}% of FMA peak")
    if "torch_peak_mem_bytes" in r:
        line += f"  peak MB {peak_mb(r)}"
    if "torch_layouts_ms" in r:
        line += f"  [torch {layouts_note(r['torch_layouts_ms'], r['torch_layout'])}]"
    if "torch2_ms" in r:
        line += f"  | 2nd torch {r['torch2_ms']:.3f} ms, ratio {fmt(r.get('ratio2'), '.2f')}"
        if "torch2_layouts_ms" in r:
            line += f" [{layouts_note(r['torch2_layouts_ms'], r['torch2_layout'])}]"
    if "torch2_error" in r:
        line += f"  [2nd torch: {r['torch2_error']}]"
    if r["neatml_status"] != "ok":
        line += f"  [neatml {r['neatml_status']}: {r.get('neatml_reason', '')}]"
    if "torch_error" in r:
        line += f"  [torch: {r['torch_error']}]"
    if "rounds" in r:
        line += (f"\n{'':<30} {len(r['rounds'])} rounds, medians above; each round's ratio: "
                 + " ".join(f"{x['ratio']:.2f}" for x in r["rounds"]))
    print(line, flush=True)


if __name__ == "__main__":
    main()
