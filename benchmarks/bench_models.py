"""PGD-10 on real-size architectures: time against the hand-written floor and memory per sample.

Models (random weights are enough for timing; fixed seeds, eval mode):

* ``preact-resnet18``: PreAct ResNet-18 (``robustness.architectures``), CIFAR-shaped 3x32x32 inputs;
* ``timm-resnet50``: ``timm.create_model("resnet50")`` (1,000 classes) at 3x224x224;
* ``robustbench:Wong2020Fast`` and ``timm:resnet50.a1_in1k``: the same two architectures as the model
  sources return them (``robustness.load_model``), loaded offline from caches this script writes with the
  same kind of fixed-seed random weights: RobustBench's PreActResNet-18 (its normalization inside its own
  forward) and timm's ResNet-50 inside a ``NormalizedModel`` with its ``pretrained_cfg`` statistics. They
  show what a source's wrapping costs against the floor run on the same wrapped model.

Inputs are uniform in [0, 1], labels are the model's clean predictions (every sample starts
correctly classified). Linf eps = 8/255, step 2/255, random start, 10 steps, cross-entropy.

Contenders: the floor (``bench_pgd.floor_pgd_linf``: random start, then 10 x forward,
``torch.autograd.grad``, sign step, projection, clamp) and ours, ``PGD(steps=10,
early_stop=False)``, so that both run every sample through every step. Timed round-robin in one
process (best and median of ``--repeats``; CUDA synchronised around each call).

Memory per sample: the peak memory an attack call adds above what the model and the inputs
already hold, divided by the batch. On CUDA, ``torch.cuda.max_memory_allocated`` after a reset,
minus the allocation before the call. On the CPU, the largest running total of the allocations
that ``torch.profiler`` (``profile_memory=True``) records during one call.

``--standard`` (CUDA only by default; slow on a CPU) adds the throughput, in images per second, of
``robustness.evaluate(attacks="standard", epsilons=[8/255], checks=False)`` end to end on each
model's batch: the preset as it stands in this commit (the description records its attacks).

Run from the repository root::

    python benchmarks/bench_models.py                       # CPU; writes results/models_cpu.{json,md}
    python benchmarks/bench_models.py --models preact-resnet18,robustbench:Wong2020Fast,timm-resnet50,timm:resnet50.a1_in1k
    python benchmarks/bench_models.py --device cuda --standard   # writes results/models_cuda.{json,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from benchmarks.bench_pgd import floor_pgd_linf
from benchmarks.common import (
    RESULTS_DIR,
    Timing,
    best_of_interleaved,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
)
from robustness.architectures import build_architecture
from robustness.attacks import PGD
from robustness.attacks.presets import preset_entries

log = logging.getLogger("bench_models")

EPS = 8 / 255
STEPS = 10
ALPHA = 2 / 255
TARGET_RATIO = 1.10
MODELS = {
    "preact-resnet18": {"shape": (3, 32, 32), "batch": {"cpu": 32, "cuda": 512}},
    "timm-resnet50": {"shape": (3, 224, 224), "batch": {"cpu": 4, "cuda": 128}},
    "robustbench:Wong2020Fast": {"shape": (3, 32, 32), "batch": {"cpu": 32, "cuda": 512}},
    "timm:resnet50.a1_in1k": {"shape": (3, 224, 224), "batch": {"cpu": 4, "cuda": 128}},
}
DEFAULT_MODELS = ("preact-resnet18", "timm-resnet50")
CONTENDERS = ("floor", "ours (early_stop=False)")


def build_model(name: str, cache: Path | None = None) -> nn.Module:
    """The model ``name`` with fixed-seed random weights, in eval mode (source models: loaded through their
    source from caches written under ``cache``)."""
    torch.manual_seed(0)  # a benchmark script may seed the global generator: the weights are fixed
    if ":" in name:
        if cache is None:
            raise ValueError(f"{name} is loaded through its source: give a cache directory")
        return source_model(name, cache)
    if name == "preact-resnet18":
        return build_architecture("preact-resnet18", num_classes=10).eval()
    if name == "timm-resnet50":
        import timm

        return timm.create_model("resnet50", pretrained=False, num_classes=1000).eval()
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")


def source_model(name: str, cache: Path) -> nn.Module:
    """``name`` as :func:`robustness.load_model` returns it, from a cache under ``cache`` that holds fixed-seed
    random weights of the real architecture (offline: nothing is downloaded)."""
    import os

    if name.startswith("robustbench:"):
        from robustness.sources.robustbench_compat import import_robustbench

        import_robustbench()
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

        model_name = name.split(":", 1)[1]
        net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][model_name]["model"]()
        with torch.no_grad():  # BatchNorm statistics as after training, so the loader does not call it untrained
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.fill_(0.9)
                    m.num_batches_tracked.fill_(1)
        folder = cache / "robustbench" / "cifar10" / "Linf"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict()}, folder / f"{model_name}.pt")
        return robustness.load_model(name, dataset="cifar10", threat_model="Linf", model_dir=cache / "robustbench")
    if name.startswith("timm:"):
        import timm
        from huggingface_hub import constants
        from safetensors.torch import save_file

        model_name = name.split(":", 1)[1]
        hub = cache / "hf" / "hub"
        os.environ.update(HF_HOME=str(cache / "hf"), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(hub), True  # read once, at import
        revision = "0" * 40
        repo = hub / f"models--timm--{model_name}"
        (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        net = timm.create_model(model_name, pretrained=False)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.fill_(0.9)
                    m.num_batches_tracked.fill_(1)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(repo / "snapshots" / revision / "model.safetensors"))
        return robustness.load_model(name)
    raise ValueError(f"unknown model source in {name!r}")


def inputs(model: nn.Module, name: str, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Uniform inputs of the model's shape and the model's clean predictions as labels."""
    x = torch.rand((batch, *MODELS[name]["shape"]), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return x, y


def contenders(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Callable[[], Any]]:
    ours = PGD(norm="linf", steps=STEPS, early_stop=False)
    return {
        "floor": lambda: floor_pgd_linf(model, x, y, EPS, ALPHA, STEPS, torch.Generator(x.device).manual_seed(0)),
        "ours (early_stop=False)": lambda: ours(model, x, y, eps=EPS),
    }


def cuda_memory(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Peak bytes per sample that each contender adds on the GPU."""
    out = {}
    for name, fn in contenders(model, x, y).items():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        adv = fn()
        torch.cuda.synchronize()
        out[name] = (torch.cuda.max_memory_allocated() - before) / x.shape[0]
        del adv
    return out


def cpu_memory(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Peak bytes per sample that each contender allocates on the CPU, from the profiler's memory events.

    ``torch.profiler`` with ``profile_memory=True`` records every CPU allocation and free with the
    running total allocated since profiling began; the largest total is the call's peak."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, fn in contenders(model, x, y).items():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        totals = [e["args"]["Total Allocated"] for e in events
                  if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
        if not totals:
            raise RuntimeError(f"the profiler recorded no CPU allocation for {name}: cannot measure its memory")
        out[name] = max(totals) / x.shape[0]
    return out


def standard_throughput(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Images per second of the ``standard`` preset end to end: one timed call after one warm-up call."""
    def run() -> Any:
        return robustness.evaluate(model, (x, y), attacks="standard", epsilons=[EPS], batch_size=x.shape[0],
                                   progress=False, checks=False, seed=0)

    run()  # warm-up: kernels, autotuning, allocator
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    report = run()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": x.shape[0] / seconds,
            "robust_accuracy": report.robust_accuracy[EPS], "clean_accuracy": report.clean_accuracy,
            "attacks": [f"{name}{settings}" for name, settings in preset_entries("standard", "linf") or ()]}


def bench_model(name: str, device: torch.device, batch: int, repeats: int, warmup: int, standard: bool,
                cache: Path | None = None) -> dict[str, Any]:
    model = build_model(name, cache).to(device)
    x, y = inputs(model, name, batch, device)
    timings: dict[str, Timing] = best_of_interleaved(contenders(model, x, y), repeats=repeats, warmup=warmup)
    floor = timings["floor"]
    rows = [{"contender": c, "best_s": t.best, "median_s": t.median, "ratio_to_floor_best": t.best / floor.best,
             "ratio_to_floor_paired_median": paired_ratio(t, floor, cpu=False)} for c, t in timings.items()]
    memory = cuda_memory(model, x, y) if device.type == "cuda" else cpu_memory(model, x, y)
    result: dict[str, Any] = {"batch": batch, "input_shape": list(MODELS[name]["shape"]), "rows": rows,
                              "memory_bytes_per_sample": memory,
                              "memory_ratio": memory["ours (early_stop=False)"] / memory["floor"]}
    if standard:
        result["standard"] = standard_throughput(model, x, y)
    return result


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# PGD-10 on real-size architectures ({result['setup']['device']})", "",
             *provenance_lines(result["machine"], result["command"], result["date"]), "", result["setup"]["summary"],
             "", f"**Target, ours within {TARGET_RATIO:.2f}x of the floor: {result['target']}.**", ""]
    for name, sec in result["models"].items():
        shape = "x".join(map(str, sec["input_shape"]))
        lines += [f"## {name}, batch {sec['batch']} x {shape}", ""]
        mem = sec["memory_bytes_per_sample"]
        body = [[r["contender"], f"{r['best_s']:.3f}", f"{r['median_s']:.3f}", f"{r['ratio_to_floor_best']:.3f}x",
                 f"{r['ratio_to_floor_paired_median']:.3f}x", f"{mem[r['contender']] / 2**20:.2f}"]
                for r in sec["rows"]]
        lines += [markdown_table(["contender", "best (s)", "median (s)", "best / floor", "paired median / floor",
                                  "peak MiB per sample"], body), "",
                  f"Memory, ours / floor: {sec['memory_ratio']:.3f}x.", ""]
        if "standard" in sec:
            st = sec["standard"]
            lines += [f"`standard` preset end to end: {st['seconds']:.2f} s for {sec['batch']} images = "
                      f"**{st['images_per_second']:.1f} images/s** (robust accuracy {100 * st['robust_accuracy']:.1f}%, "
                      f"clean {100 * st['clean_accuracy']:.1f}%; random weights, labels = clean predictions). "
                      f"Attacks: " + "; ".join(f"`{a}`" for a in st["attacks"]), ""]
    return "\n".join(lines)


def _result(args: argparse.Namespace, device: torch.device, date: str, info: dict[str, Any],
            models: dict[str, Any]) -> dict[str, Any]:
    ratios = [r["ratio_to_floor_best"] for sec in models.values() for r in sec["rows"] if r["contender"] != "floor"]
    target = (f"{'met' if max(ratios) <= TARGET_RATIO else 'NOT met'} (ours / floor, best times: "
              + ", ".join(f"{v:.3f}x" for v in ratios) + ")")
    return {
        "benchmark": f"models_{device.type}", "command": command_line(), "date": date, "machine": info,
        "setup": {"device": str(device), "steps": STEPS, "eps": EPS, "step_size": ALPHA, "repeats": args.repeats,
                  "warmup": args.warmup, "threads": args.threads,
                  "summary": (f"Fixed-seed random weights, eval mode; inputs uniform in [0, 1], labels = clean "
                              f"predictions; Linf 8/255, step 2/255, random start, {STEPS} steps. Best and median of "
                              f"{args.repeats} round-robin rounds after {args.warmup} warm-up"
                              + (f", {args.threads} CPU threads." if device.type == "cpu" else
                                 ", CUDA synchronised around every call."))},
        "target": target, "models": models,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma list of {', '.join(MODELS)} (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch", type=int, default=None, help="one batch size for every model "
                        "(default: 32/4 on the CPU, 512/128 on CUDA for PreAct ResNet-18/ResNet-50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on the CPU")
    parser.add_argument("--standard", action="store_true", help="add the standard preset's throughput")
    parser.add_argument("--tag", default=None, help="suffix of the result files: models_<device>_<tag>.{json,md}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: use {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    date, info = now_utc(), machine_info(device, peers=("timm",))
    models: dict[str, Any] = {}
    cache = Path(tempfile.mkdtemp(prefix="bench_models_"))  # the source models' caches (random weights)
    try:
        for name in names:
            batch = args.batch or MODELS[name]["batch"][device.type]
            log.info("%s on %s, batch %d", name, device, batch)
            models[name] = bench_model(name, device, batch, args.repeats, args.warmup, args.standard, cache)
            result = _result(args, device, date, info, models)
            if not args.no_write:  # after every model, so that a run stopped later keeps what it measured
                save_results(args.out, f"models_{device.type}" + (f"_{args.tag}" if args.tag else ""), result,
                             _markdown(result))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
