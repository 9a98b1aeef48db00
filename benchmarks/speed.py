"""Speed of the meta-learning core: vectorized (torch.func) vs. the naive per-task loop.

Same model, same tasks, same steps for both engines. Measures
- fine-tuning: users/s adapting every user on their support set (`MetaAlgorithm.adapt`), vectorized in
  chunks of `--chunk-sizes` users vs. the naive loop;
- meta-training: tasks/s of full meta-steps (meta-loss, backward, Adam step) for every algorithm;
- data-parallel meta-training: tasks/s of the train stage's own meta-step (`train.meta_gradients`,
  all-reduce, Adam) under torchrun with 1 and 2 processes on CPU (gloo; the machine's cores split
  evenly between the processes), and with 1..N processes on N GPUs (NCCL) when present;
- on CUDA, the meta-batch size against throughput, eager and with the meta-gradient replayed from a
  CUDA graph (`training.graphed`), and the largest parameter difference between the two after the
  same steps (the equivalence check on the device).
CPU and CUDA when present (`--devices` picks). Writes reports/bench_speed.json.

    python -m benchmarks.speed            # the measured run
    python -m benchmarks.speed --quick    # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from metarec_tasks.meta import ALGORITHMS, build_algorithm, supported_adapt
from metarec_tasks.meta.functional import REFERENCE, VECTORIZED, Engine
from metarec_tasks.meta.random_tasks import random_items, random_task_batch
from metarec_tasks.meta.tasks import TaskBatch, select
from metarec_tasks.models.rating import NetDims, RatingNet
from metarec_tasks.params import MetaParams, load_params
from metarec_tasks.training.adam import adam
from metarec_tasks.training.distributed import World, init_distributed
from metarec_tasks.training.graphed import GraphedMetaGradients
from metarec_tasks.training.loop import meta_gradients

log = logging.getLogger("benchmarks.speed")

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "reports" / "bench_speed.json"


def network_dims(embedding_dim: int, hidden: list[int]) -> NetDims:
    """The default synthetic pipeline's feature layout (3 user and 1 item categorical, tags, item ids)."""
    return NetDims(
        user_cat_sizes=[8, 3, 22],
        item_cat_sizes=[12],
        item_multi_sizes={"tags": 30},
        n_item_ids=500,
        embedding_dim=embedding_dim,
        hidden=hidden,
        item_id_embedding=True,
        rating_offset=3.5,
    )


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def finetune_all(algorithm, model: RatingNet, batch: TaskBatch, steps: int, chunk: int) -> None:
    for start in range(0, len(batch), chunk):
        index = torch.arange(start, min(start + chunk, len(batch)), device=batch.user_rows.device)
        algorithm.adapt(model, select(batch, index), steps)


def bench_finetune(mp: MetaParams, dims: NetDims, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = RatingNet(dims, random_items(dims)).to(device)
    batch = random_task_batch(dims, args.users, args.support, args.query, ragged=True).to(device)
    naive_users = min(args.naive_users, args.users)
    naive_batch = select(batch, torch.arange(naive_users, device=device))
    reference = build_algorithm(mp, model, REFERENCE)
    vectorized = build_algorithm(mp, model, VECTORIZED)
    naive_s = timed(lambda: reference.adapt(model, naive_batch, args.steps), device, 1)
    naive_rate = naive_users / naive_s
    result = {
        "users": args.users,
        "support_rows": args.support,
        "inner_steps": args.steps,
        "naive_users": naive_users,
        "naive_users_per_s": naive_rate,
        "naive_seconds_for_all_users": args.users / naive_rate,
        "vectorized": {},
    }
    for chunk in args.chunk_sizes:
        seconds = timed(
            lambda c=chunk: finetune_all(vectorized, model, batch, args.steps, c), device, args.repeats
        )
        result["vectorized"][str(chunk)] = {
            "seconds": seconds,
            "users_per_s": args.users / seconds,
            "speedup": args.users / seconds / naive_rate,
        }
        log.info(
            "fine-tune %s chunk %d: %.3fs, %.1fx", device, chunk, seconds, args.users / seconds / naive_rate
        )
    best = max(result["vectorized"].values(), key=lambda r: r["speedup"])
    result["best_speedup"] = best["speedup"]
    return result


def meta_steps(algorithm, model: RatingNet, batches: list[TaskBatch]) -> None:
    optimizer = adam([*model.parameters(), *algorithm.parameters()], 1e-3)
    for batch in batches:
        loss = algorithm.meta_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def bench_meta(mp: MetaParams, dims: NetDims, args, device: torch.device) -> dict:
    results = {}
    tasks = random_task_batch(dims, args.meta_batches * mp.meta_batch_size, args.support, args.query).to(
        device
    )
    batches = [
        select(tasks, torch.arange(i * mp.meta_batch_size, (i + 1) * mp.meta_batch_size, device=device))
        for i in range(args.meta_batches)
    ]
    naive_batches = batches[: args.naive_meta_batches]
    for name in sorted(ALGORITHMS):
        algo_params = mp.model_copy(update={"algorithm": name, "adapt": supported_adapt(name, mp.adapt)})
        rates = {}
        for key, engine, chosen, repeats in (
            ("reference", REFERENCE, naive_batches, 1),
            ("vectorized", VECTORIZED, batches, args.repeats),
        ):
            rates[key] = _meta_rate(algo_params, dims, device, engine, chosen, repeats)
        results[name] = {
            "naive_tasks_per_s": rates["reference"],
            "vectorized_tasks_per_s": rates["vectorized"],
            "speedup": rates["vectorized"] / rates["reference"],
        }
        log.info("meta-train %s %s: %.1fx", device, name, results[name]["speedup"])
    return {
        "meta_batch_size": mp.meta_batch_size,
        "inner_steps": mp.inner_steps,
        "support_rows": args.support,
        "query_rows": args.query,
        "algorithms": results,
    }


def _meta_rate(mp: MetaParams, dims, device, engine: Engine, batches, repeats: int) -> float:
    def run() -> None:
        torch.manual_seed(0)
        model = RatingNet(dims, random_items(dims)).to(device)
        algorithm = build_algorithm(mp, model, engine)
        algorithm.start_epoch(mp.first_order_epochs)  # MAML++ at its second-order phase
        meta_steps(algorithm, model, batches)

    seconds = timed(run, device, repeats)
    return len(batches) * mp.meta_batch_size / seconds


def bench_graphs(mp: MetaParams, dims: NetDims, args, device: torch.device) -> dict:
    """Tasks/s of meta-steps (meta-gradient + Adam) per meta-batch size, eager vs CUDA graph replay,
    and the largest weight difference between the two after the same `--meta-batches` steps."""
    results = {}
    for size in args.graph_batch_sizes:
        tasks = random_task_batch(dims, args.meta_batches * size, args.support, args.query).to(device)
        batches = [
            select(tasks, torch.arange(i * size, (i + 1) * size, device=device))
            for i in range(args.meta_batches)
        ]
        figures, weights = {}, {}
        for mode in ("eager", "graph"):
            model, step = _graph_step(mp, dims, device, batches[0], graphed=mode == "graph")
            figures[f"{mode}_tasks_per_s"] = (
                len(batches)
                * size
                / timed(lambda step=step, batches=batches: [step(b) for b in batches], device, args.repeats)
            )
            model, step = _graph_step(mp, dims, device, batches[0], graphed=mode == "graph")
            for batch in batches:
                step(batch)
            weights[mode] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        figures["speedup"] = figures["graph_tasks_per_s"] / figures["eager_tasks_per_s"]
        figures["max_abs_weight_difference"] = (weights["graph"] - weights["eager"]).abs().max().item()
        results[str(size)] = figures
        log.info("meta-batch %d on %s: %s", size, device, figures)
    return {"algorithm": mp.algorithm, "steps": args.meta_batches, "meta_batch_sizes": results}


def _graph_step(mp: MetaParams, dims: NetDims, device, example: TaskBatch, graphed: bool):
    """A fresh model (seed 0) and its meta-step function: meta-gradient (graphed or not), then Adam."""
    torch.manual_seed(0)
    model = RatingNet(dims, random_items(dims)).to(device)
    algorithm = build_algorithm(mp, model)
    algorithm.start_epoch(mp.first_order_epochs)
    optimizer = adam([*model.parameters(), *algorithm.parameters()], mp.meta_lr)
    gradients = (
        GraphedMetaGradients(model, optimizer, algorithm, example)
        if graphed
        else (lambda batch: meta_gradients(model, optimizer, algorithm, batch))
    )

    def step(batch: TaskBatch) -> None:
        gradients(batch)
        optimizer.step()

    return model, step


def bench_data_parallel(args, networks: list[str]) -> dict[str, dict]:
    """Launch torchrun workers (`--dp-worker`) for each process count; collect rank 0's figures."""
    cores = os.cpu_count() or 1
    # (device, processes, threads each): one process on every core (and on one core), then the cores split
    plans = {("cpu", 1, cores), *(("cpu", n, max(1, cores // n)) for n in args.processes)}
    plans = sorted(plans if args.quick else {*plans, ("cpu", 1, 1)}) if "cpu" in args.devices else []
    if torch.cuda.is_available() and "cuda" in args.devices:
        plans += [("cuda", n, 1) for n in sorted({1, torch.cuda.device_count()})]
    results = {}
    for device, nproc, threads in plans:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rank0.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += [f"--nproc-per-node={nproc}", str(Path(__file__).resolve()), "--dp-worker"]
            command += ["--dp-device", device, "--dp-output", str(out), "--threads", str(threads)]
            command += ["--meta-batches", str(args.meta_batches), "--repeats", str(args.repeats)]
            command += ["--support", str(args.support), "--query", str(args.query)]
            command += ["--dp-networks", *networks]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
            env["OMP_NUM_THREADS"] = str(threads)
            subprocess.run(command, check=True, env=env, cwd=REPO)
            figures = json.loads(out.read_text())
        for net, figure in figures.items():
            results.setdefault(f"{device}/{net}", {})[f"{nproc}x{threads}"] = {
                "processes": nproc,
                "threads_per_process": threads,
                **figure,
            }
    for runs in results.values():  # against the best single process: threads may lose on a busy machine
        single = max(run["tasks_per_s"] for run in runs.values() if run["processes"] == 1)
        for run in runs.values():
            run["speedup_vs_best_1_process"] = run["tasks_per_s"] / single
    return results


def dp_worker(args) -> None:
    """One torchrun worker: the train stage's meta-step on its shard of every meta-batch."""
    device = torch.device(args.dp_device)
    world = init_distributed(device)
    params = load_params(REPO / "params.yaml")
    rates = {}
    for net in args.dp_networks:
        rates[net] = _dp_rate(params.meta, NETWORKS[net](params), args, device, world)
        if world.is_main:
            log.info("data-parallel %s/%s, %d process(es): %s", device, net, world.size, rates[net])
    if world.is_main:
        args.dp_output.write_text(json.dumps(rates))


def _dp_rate(mp: MetaParams, dims: NetDims, args, device: torch.device, world: World) -> dict:
    torch.manual_seed(0)
    model = RatingNet(dims, random_items(dims)).to(device)
    algorithm = build_algorithm(mp, model)
    algorithm.start_epoch(mp.first_order_epochs)  # MAML++ at its second-order phase
    optimizer = adam([*model.parameters(), *algorithm.parameters()], mp.meta_lr)
    n_tasks = args.meta_batches * mp.meta_batch_size
    tasks = random_task_batch(dims, n_tasks, args.support, args.query).to(device)

    def epoch() -> None:
        for start in range(0, n_tasks, mp.meta_batch_size):
            index = torch.arange(start, min(start + mp.meta_batch_size, n_tasks), device=device)
            meta_gradients(model, optimizer, algorithm, select(tasks, index), world)  # as train does
            optimizer.step()
        world.barrier()  # the slowest rank sets the pace

    seconds = timed(epoch, device, args.repeats)
    steps = -(-n_tasks // mp.meta_batch_size)
    flat = torch.zeros(sum(p.numel() for p in optimizer.param_groups[0]["params"]), device=device)
    allreduce = timed(lambda: [world.all_sum(flat) for _ in range(steps)], device, args.repeats) / steps
    return {
        "tasks_per_s": n_tasks / seconds,
        "ms_per_meta_step": 1e3 * seconds / steps,
        "ms_per_gradient_allreduce": 1e3 * allreduce if world.size > 1 else 0.0,
    }


NETWORKS: dict[str, Callable] = {
    "default": lambda params: network_dims(params.model.embedding_dim, list(params.model.hidden)),
    "wide": lambda params: network_dims(32, [64, 64]),  # 192→64→64→1, near DESIGN.md's 256→64→64→1
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--naive-users", type=int, default=2000)
    parser.add_argument("--support", type=int, default=20)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="fine-tuning inner steps")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 2000])
    parser.add_argument("--meta-batches", type=int, default=10)
    parser.add_argument("--naive-meta-batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine: stable figures)"
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="data-parallel CPU runs")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument(
        "--graph-batch-sizes", type=int, nargs="+", default=[32, 256, 1024, 4096], help="CUDA only"
    )
    parser.add_argument("--dp-worker", action="store_true", help=argparse.SUPPRESS)  # under torchrun
    parser.add_argument("--dp-device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--dp-output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dp-networks", nargs="+", default=["default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.dp_worker:
        dp_worker(args)
        return
    if args.quick:
        args.users, args.naive_users, args.chunk_sizes, args.support = 64, 8, [32], 8
        args.meta_batches, args.naive_meta_batches, args.repeats = 1, 1, 1
        args.graph_batch_sizes = [8]

    params = load_params(REPO / "params.yaml")
    mp = params.meta
    networks = {
        name: build(params) for name, build in NETWORKS.items() if not args.quick or name == "default"
    }
    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    report = {
        "quick": args.quick,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "adapt": mp.adapt,
        "load_average_before": os.getloadavg(),
        "results": {},
    }
    for device in devices:
        for net, dims in networks.items():
            report["results"][f"{device.type}/{net}"] = {
                "finetune": bench_finetune(mp, dims, args, device),
                "meta_train": bench_meta(mp, dims, args, device),
            }
        if device.type == "cuda" or args.quick:  # on CPU the "graph" runs eagerly: a smoke test only
            report["results"][f"{device.type}/graphs"] = bench_graphs(mp, networks["default"], args, device)
    report["data_parallel"] = {
        "algorithm": mp.algorithm,
        "meta_batch_size": mp.meta_batch_size,
        "tasks_per_epoch": args.meta_batches * mp.meta_batch_size,
        "results": bench_data_parallel(args, list(networks)),
    }
    report["load_average_after"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    log.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
