/*
 * neatml_bench.c — the benchmark driver: the case table of DESIGN.md's Performance
 * section, the command line, the readable table, JSON lines and the seed comparison.
 *
 *   neatml_bench [--backend cpu|cuda|auto] [--case NAME]... [--reps N] [--seed N]
 *                [--json] [--seed-table] [--list]
 *
 * Exit status: 0 when every case ran and passed its check or was not available (an op the
 * backend lacks), 1 when a case FAILED its check or hit a library error, 2 on bad usage or
 * when the device cannot be opened.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const bench_case cases[] = {
    {"matmul_1024", "C = A·B, 1024x1024x1024", bench_matmul_1024},
    {"matmul_large", "C = A·B, 8192^3 on a GPU, 2048^3 on a CPU", bench_matmul_large},
    {"linear_relu_1024", "relu(X·W^T + b), X 1024x1024, W 1024x1024", bench_linear_relu_1024},
    {"conv2d_256f", "N=32, C=64, 56x56, 256 filters 3x3, stride 1, pad 1", bench_conv2d_256f},
    {"maxpool2x2_32x256x56", "2x2 stride 2 on 32x256x56x56", bench_maxpool2x2},
    {"softmax_rows_4096", "softmax over rows of 4096x4096", bench_softmax_rows_4096},
    {"sum_all_4096", "sum of 4096x4096", bench_sum_all_4096},
    {"add_4096", "4096x4096 + 4096x4096", bench_add_4096},
    {"mlp_700_small_ops", "100 x (3 x linear+relu 256->256, batch 64, then a scale): 700 ops",
     bench_mlp_700_small_ops},
    {"lenet_train_step_b128", "one SGD step of LeNet with softmax cross-entropy, batch 128",
     bench_lenet_train_step},
    {"destroy_during_replay", "create+destroy a 4 MiB tensor while a replayed matmul runs: host us",
     bench_destroy_during_replay},
    /* issue 14: half precision (inputs and output in the type, float32 math) */
    {"matmul_1024_bf16", "matmul_1024 in bf16", bench_matmul_1024_bf16},
    {"matmul_large_bf16", "matmul_large in bf16 (8192^3 GPU, 2048^3 CPU)", bench_matmul_large_bf16},
    {"matmul_large_f16", "matmul_large in f16 (8192^3 GPU, 2048^3 CPU)", bench_matmul_large_f16},
    {"conv2d_256f_bf16", "conv2d_256f in bf16", bench_conv2d_256f_bf16},
    {"conv2d_256f_nhwc", "conv2d_256f, NHWC tensors (NEAT_LAYOUT_NHWC)", bench_conv2d_256f_nhwc},
    {"conv2d_256f_bf16_nhwc", "conv2d_256f in bf16, NHWC tensors (NEAT_LAYOUT_NHWC)",
     bench_conv2d_256f_bf16_nhwc},
    {"softmax_rows_4096_bf16", "softmax_rows_4096 in bf16", bench_softmax_rows_4096_bf16},
    {"sum_all_4096_bf16", "sum_all_4096 in bf16 (sum in float32, bf16 result)",
     bench_sum_all_4096_bf16},
    {"add_4096_bf16", "add_4096 in bf16", bench_add_4096_bf16},
    /* issue 13: fused epilogues, strict float32 */
    {"linear_gelu_1024", "gelu_tanh(X·W^T + b), X 1024x1024, W 1024x1024", bench_linear_gelu_1024},
    {"conv2d_bias_relu_256f", "relu(conv2d_256f + bias)", bench_conv2d_bias_relu_256f},
    /* issue 13: the TF32 math mode (a GPU mode: not available on the CPU) */
    {"matmul_1024_tf32", "matmul_1024, math mode TF32", bench_matmul_1024_tf32},
    {"matmul_large_tf32", "matmul_large, math mode TF32", bench_matmul_large_tf32},
    {"linear_relu_1024_tf32", "linear_relu_1024, math mode TF32", bench_linear_relu_1024_tf32},
    {"conv2d_256f_tf32", "conv2d_256f, math mode TF32", bench_conv2d_256f_tf32},
    {"lenet_train_step_b1024", "lenet_train_step_b128 at batch 1024", bench_lenet_train_step_b1024},
    {"lenet_train_step_b128_bf16", "lenet_train_step_b128 in bf16 mixed precision",
     bench_lenet_train_step_b128_bf16},
    {"lenet_train_step_b128_nhwc", "lenet_train_step_b128 with NHWC images and filters",
     bench_lenet_train_step_b128_nhwc},
    {"lenet_train_step_b128_bf16_nhwc", "lenet_train_step_b128_bf16 with NHWC images and filters",
     bench_lenet_train_step_b128_bf16_nhwc},
    {"lenet_train_step_b1024_bf16", "lenet_train_step_b1024 in bf16 mixed precision",
     bench_lenet_train_step_b1024_bf16},
    /* issue 13: the yardstick of the compute-bound cases (cpu backend only) */
    {"fma_peak", "FMA peak: 12 independent vector FMA chains on every backend thread",
     bench_fma_peak},
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* A JSON string literal of s (quotes, backslashes and control characters escaped). */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static const char *outcome_word(bench_outcome o) {
    switch (o) {
    case BENCH_OK: return "ok";
    case BENCH_UNAVAILABLE: return "not available";
    case BENCH_FAILED: return "FAILED";
    default: return "error";
    }
}

static void print_json(const bench_ctx *ctx, const char *name, const bench_result *r) {
    printf("{\"case\": ");
    json_string(stdout, name);
    printf(", \"backend\": \"%s\", \"device\": ", neat_backend_name(ctx->props.backend));
    json_string(stdout, ctx->props.name);
    printf(", \"threads\": %d, \"timing\": \"%s\", \"status\": \"%s\"", ctx->props.num_threads,
           ctx->queued ? "queued" : "idle", outcome_word(r->outcome));
    if (r->outcome == BENCH_OK) {
        printf(", \"median_ms\": %.6g, \"rate\": %.6g, \"unit\": \"%s\", \"peak_mem_bytes\": %lld"
               ", \"wall_ms\": %.6g, \"reps\": %d, \"check\": %.3g, \"shape\": ",
               r->median_ms, r->rate, r->unit, (long long)r->peak_mem, r->wall_ms, ctx->reps,
               r->check_err);
        json_string(stdout, r->shape);
        fputs(r->extra_json, stdout);
    } else {
        printf(", \"reason\": ");
        json_string(stdout, r->reason);
    }
    printf("}\n");
    fflush(stdout);
}

static void print_row(const char *name, const bench_result *r) {
    if (r->outcome == BENCH_OK)
        printf("%-24s %11.4f %11.4f %11.1f %-8s %9.1f  %-4s %s\n", name, r->median_ms, r->wall_ms,
               r->rate, r->unit, (double)r->peak_mem / 1048576.0, r->check_err <= 1 ? "ok" : "??",
               r->shape);
    else if (r->outcome == BENCH_UNAVAILABLE)
        printf("%-24s not available: %s\n", name, r->reason);
    else
        printf("%-24s %s: %s\n", name, r->outcome == BENCH_FAILED ? "FAILED" : "ERROR", r->reason);
    fflush(stdout);
}

/* Peak resident memory of this process (VmHWM), bytes; -1 when /proc is not there. */
static int64_t resident_peak_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* The 1-minute load average (other work sharing the machine skews timings); -1 if unknown. */
static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double load = -1;
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1;
        fclose(f);
    }
    return load;
}

/* The seed note's estimates (Apple GPU through MPS, shapes not stated) beside this run. */
static void print_seed_table(const bench_ctx *ctx, const bench_result *res, int json) {
    const bench_result *mm = NULL, *conv = NULL, *mlp = NULL;
    int64_t peak = 0;
    for (int i = 0; i < NCASES; i++) {
        if (res[i].outcome == BENCH_OK && res[i].peak_mem > peak) peak = res[i].peak_mem;
        if (res[i].outcome != BENCH_OK || res[i].unit == NULL) continue;
        if (!strcmp(cases[i].name, "matmul_1024")) mm = &res[i];
        if (!strcmp(cases[i].name, "conv2d_256f")) conv = &res[i];
        if (!strcmp(cases[i].name, "mlp_700_small_ops")) mlp = &res[i];
    }
    int64_t rss = resident_peak_bytes();
    /* On the CPU the device pool is host memory, already inside the resident peak. */
    int cpu = ctx->props.backend == NEAT_BACKEND_CPU;
    double mem_mb = ((cpu ? 0 : (double)peak) + (rss > 0 ? (double)rss : 0)) / 1048576.0;
    struct {
        const char *op, *seed, *what;
        const bench_result *r;
        double value;
    } rows[4] = {{"MatMul 1024x1024", "~2 ms", "matmul_1024", mm, mm ? mm->median_ms : 0},
                 {"Conv2D 256 filters", "~6 ms", "conv2d_256f", conv, conv ? conv->median_ms : 0},
                 {"Batch operations", "~20 ms", "mlp_700_small_ops (700 ops, one buffer)", mlp,
                  mlp ? mlp->median_ms : 0},
                 {"Memory overhead", "~80 MB",
                  cpu ? "process peak RSS (VmHWM; the CPU pool lives inside it)"
                      : "peak device memory + process peak RSS (VmHWM)",
                  rss > 0 ? res : NULL, mem_mb}};
    if (json) {
        for (int i = 0; i < 4; i++) {
            printf("{\"seed_row\": ");
            json_string(stdout, rows[i].op);
            printf(", \"seed\": \"%s\", \"neatml_case\": ", rows[i].seed);
            json_string(stdout, rows[i].what);
            if (rows[i].r)
                printf(", \"neatml\": %.6g, \"unit\": \"%s\"}\n", rows[i].value,
                       i == 3 ? "MB" : "ms");
            else
                printf(", \"neatml\": null}\n");
        }
        return;
    }
    printf("\nThe seed's estimates (Apple GPU through MPS, shapes not stated) beside neatml on\n"
           "%s (%s, %d threads):\n\n",
           ctx->props.name, neat_backend_name(ctx->props.backend), ctx->props.num_threads);
    printf("| operation | seed estimate | neatml case | neatml |\n|---|---|---|---|\n");
    for (int i = 0; i < 4; i++) {
        printf("| %s | %s | %s | ", rows[i].op, rows[i].seed, rows[i].what);
        if (!rows[i].r)
            printf("not measured |\n");
        else if (i == 3)
            printf("%.0f MB (device peak %.0f MB, RSS %.0f MB) |\n", rows[i].value,
                   (double)peak / 1048576.0, (double)rss / 1048576.0);
        else
            printf("%.3f ms |\n", rows[i].value);
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: neatml_bench [--backend cpu|cuda|auto] [--case NAME]... [--reps N]\n"
               "                    [--seed N] [--timing queued|idle] [--json] [--seed-table]\n"
               "                    [--list]\n");
}

int main(int argc, char **argv) {
    bench_ctx ctx = {.reps = 10, .seed = 20240601};
    neat_backend backend = NEAT_BACKEND_AUTO;
    int json = 0, seed_table = 0, nselected = 0, timing = -1; /* -1: the device's default */
    int selected[NCASES] = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--seed-table"))
            seed_table = 1;
        else if (!strcmp(a, "--list")) {
            for (int c = 0; c < NCASES; c++) printf("%-24s %s\n", cases[c].name, cases[c].work);
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (v && !strcmp(a, "--backend")) {
            i++;
            if (neat_backend_from_name(v, &backend) != NEAT_OK) {
                fprintf(stderr, "neatml_bench: %s\n", neat_last_error());
                return 2;
            }
        } else if (v && !strcmp(a, "--case")) {
            i++;
            int found = 0;
            for (int c = 0; c < NCASES; c++)
                if (!strcmp(v, cases[c].name)) selected[c] = found = 1;
            if (!found) {
                fprintf(stderr, "neatml_bench: no case '%s' (--list names them)\n", v);
                return 2;
            }
            nselected++;
        } else if (v && !strcmp(a, "--reps")) {
            i++;
            ctx.reps = atoi(v);
            if (ctx.reps < 1) {
                fprintf(stderr, "neatml_bench: --reps must be >= 1\n");
                return 2;
            }
        } else if (v && !strcmp(a, "--timing")) {
            i++;
            timing = !strcmp(v, "queued") ? 1 : !strcmp(v, "idle") ? 0 : -2;
            if (timing == -2) {
                fprintf(stderr, "neatml_bench: --timing takes queued or idle\n");
                return 2;
            }
        } else if (v && !strcmp(a, "--seed")) {
            i++;
            ctx.seed = strtoull(v, NULL, 0);
        } else {
            usage(stderr);
            return 2;
        }
    }

    neat_status st = neat_device_create(backend, 0, &ctx.dev);
    if (st != NEAT_OK || neat_device_info(ctx.dev, &ctx.props) != NEAT_OK) {
        fprintf(stderr, "neatml_bench: cannot open a %s device: %s: %s\n",
                neat_backend_name(backend), neat_status_string(st), neat_last_error());
        neat_device_destroy(ctx.dev);
        return 2;
    }
    /* queued by default on a GPU, where a replay's launch into an idle device costs a few
     * microseconds that its work does not; on the CPU the worker's clock sees no launch */
    ctx.queued = timing >= 0 ? timing : ctx.props.backend != NEAT_BACKEND_CPU;
    if (!json) {
        printf("neatml_bench: backend %s, device \"%s\", %d %s, median of %d replays, seed %llu\n",
               neat_backend_name(ctx.props.backend), ctx.props.name, ctx.props.num_threads,
               ctx.props.backend == NEAT_BACKEND_CPU ? "threads" : "multiprocessors", ctx.reps,
               (unsigned long long)ctx.seed);
        printf("time: device time of one replay of a recorded command buffer (%s); wall ms: host\n"
               "      clock around commit+wait of the same replays\n",
               ctx.props.backend == NEAT_BACKEND_CPU ? "the worker thread's clock around the ops"
                                                     : "device events around the work");
        if (ctx.queued)
            printf(
                "timing queued: each timed replay committed right behind an untimed one (the\n"
                "      launch latency hidden, as in a busy stream; --timing idle: each alone)\n");
        double load = load_average();
        if (load >= 0) printf("load average at start: %.2f\n", load);
        putchar('\n');
        printf("%-24s %11s %11s %11s %-8s %9s  %-4s %s\n", "case", "median ms", "wall ms", "rate",
               "unit", "peak MB", "chk", "work");
    }
    bench_result results[NCASES];
    int bad = 0;
    for (int c = 0; c < NCASES; c++) {
        memset(&results[c], 0, sizeof results[c]);
        results[c].outcome = BENCH_UNAVAILABLE;
        snprintf(results[c].reason, sizeof results[c].reason, "not selected");
        if (nselected && !selected[c]) continue;
        cases[c].run(&ctx, &results[c]);
        if (json)
            print_json(&ctx, cases[c].name, &results[c]);
        else
            print_row(cases[c].name, &results[c]);
        bad |= results[c].outcome == BENCH_FAILED || results[c].outcome == BENCH_ERROR;
    }
    if (seed_table) print_seed_table(&ctx, results, json);
    neat_device_destroy(ctx.dev);
    return bad ? 1 : 0;
}
