#!/usr/bin/env python3
"""ddp_lenet.py — PyTorch DDP's peer of examples/fashion_mnist.c's data-parallel step.

The same LeNet (conv(1->32, 3x3, pad 1)+relu, maxpool 2, conv(32->64, 3x3, pad 1)+relu,
maxpool 2, fc(3136->128)+relu, fc(128->10), cross-entropy, SGD momentum 0.9), batch 128
per GPU of random data that stays on the GPU, DistributedDataParallel on NCCL (one
gradient all-reduce a step, as neatml's one bucket). Weak scaling: each world size runs as
that many processes (torch.multiprocessing), each on its GPU; after a warm-up the steps are
timed with CUDA events on every rank, and rank 0 prints

    ddp_lenet world=2 batch_per_gpu=128 steps=300 images_per_s_per_gpu=12345.6 step_ms=1.234

(the slowest rank's time: a DDP step ends with its all-reduce, so the ranks move in step).
Strict float32 (TF32 off, as neatml's default); cuDNN picks its algorithms (benchmark mode,
as neatml searches them on its first commit).
    usage: bench/ddp_lenet.py [--worlds 1,2] [--steps 300] [--warmup 30] [--batch 128]
Environment: MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29531); set
NCCL_SOCKET_IFNAME=lo and NCCL_NVLS_ENABLE=0 on a machine that reaches nothing outside.
"""
import argparse
import os
import sys


def lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def worker(rank, world, args):
    import torch
    import torch.distributed as dist
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.manual_seed(42)  # the same initial weights on every rank (DDP broadcasts them too)
    model = torch.nn.parallel.DistributedDataParallel(lenet(torch).to(dev), device_ids=[rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator(device=dev).manual_seed(1000 + rank)
    x = torch.randn(args.batch, 1, 28, 28, device=dev, generator=gen)
    y = torch.randint(0, 10, (args.batch,), device=dev, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    dist.barrier(device_ids=[rank])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = torch.tensor([start.elapsed_time(end)], device=dev)
    dist.all_reduce(ms, op=dist.ReduceOp.MAX)
    if rank == 0:
        step_ms = ms.item() / args.steps
        print(f"ddp_lenet world={world} batch_per_gpu={args.batch} steps={args.steps} "
              f"images_per_s_per_gpu={args.batch * 1e3 / step_ms:.1f} step_ms={step_ms:.3f}",
              flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default="1,2", help="world sizes to run, in turn")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch", type=int, default=128, help="images per GPU a step")
    args = p.parse_args()
    import torch
    import torch.multiprocessing as mp
    ngpu = torch.cuda.device_count()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29531"))
    print(f"torch {torch.__version__}, {ngpu} GPU(s): "
          f"{torch.cuda.get_device_name(0) if ngpu else 'none'}", flush=True)
    status = 0
    for i, world in enumerate(int(w) for w in args.worlds.split(",")):
        if world > ngpu:
            print(f"ddp_lenet world={world} SKIP: {ngpu} GPU(s)", flush=True)
            continue
        os.environ["MASTER_PORT"] = str(port + i)  # a fresh rendezvous for each world size
        try:
            mp.spawn(worker, args=(world, args), nprocs=world, join=True)
        except Exception as e:  # one world size failing must not hide the others
            print(f"ddp_lenet world={world} FAILED: {e}", flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
