/* ssm-generate: sample sequences from a trained model in recurrent step mode (constant memory
 * per token), optionally continuing a prompt.
 *
 *   ssm-generate RUN_DIR_OR_CHECKPOINT [--prompt TEXT | --prompt-file FILE] [--length N] ...
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct sampler {
    double temperature, top_p;
    int top_k, V; /* V: the task's vocabulary (padding ids are never sampled) */
    uint8_t *ok;  /* (V) 1 where the task can write the token out (ops->can_generate) */
    ssm_rng rng;
    double *p;
    int *idx;
} sampler;

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const double *p = ctx;
    double x = p[*(const int *)a], y = p[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : *(const int *)a - *(const int *)b;
}

/* temperature, then top-k, then top-p (nucleus) over the softmax; temperature 0 = greedy */
static int32_t sample(sampler *s, const float *logits) {
    int V = s->V;
    int best = -1;
    for (int v = 0; v < V; v++)
        if (s->ok[v] && (best < 0 || logits[v] > logits[best])) best = v;
    if (s->temperature <= 0) return best;
    double z = 0;
    for (int v = 0; v < V; v++)
        z += s->p[v] = s->ok[v] ? exp((logits[v] - logits[best]) / s->temperature) : 0.0;
    for (int v = 0; v < V; v++) s->p[v] /= z, s->idx[v] = v;
    qsort_r(s->idx, V, sizeof(int), cmp_desc, s->p);
    int keep = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    double mass = 0;
    for (int i = 0; i < keep; i++) {
        mass += s->p[s->idx[i]];
        if (mass >= s->top_p) { keep = i + 1; break; }
    }
    double total = 0;
    for (int i = 0; i < keep; i++) total += s->p[s->idx[i]];
    double u = ssm_rng_uniform(&s->rng) * total;
    for (int i = 0; i < keep; i++) {
        u -= s->p[s->idx[i]];
        if (u <= 0) return s->idx[i];
    }
    return s->idx[keep - 1];
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n + 65536 > cap && !(buf = realloc(buf, cap = 2 * cap + 65536))) return NULL;
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    if (f != stdin) fclose(f);
    *len = n;
    return buf;
}

static void usage(void) {
    printf("Usage: ssm-generate RUN_DIR_OR_CHECKPOINT [options]\n"
           "\n"
           "Sample from a trained model and write the result in the task's format (text, FASTA,\n"
           "...) on stdout.\n"
           "\n"
           "  --prompt TEXT       continue this prompt (encoded by the task)\n"
           "  --prompt-file FILE  continue the prompt read from FILE ('-': stdin)\n"
           "  --input FILE        a task that continues files (timeseries: the next H steps of a CSV)\n"
           "  --length N          new tokens per sample (default 256)\n"
           "  --samples N         independent samples, generated side by side (default 1)\n"
           "  --temperature T     softmax temperature (default 1; 0 = greedy)\n"
           "  --top-k K           sample among the K most likely tokens (0 = all)\n"
           "  --top-p P           nucleus sampling: the smallest set with mass >= P (default 1)\n"
           "  --seed S            random seed (default 1)\n"
           "  --weights f32|bf16  the CPU step's weights: bf16 reads a bf16 copy of the projections\n"
           "                      and the head: fewer bytes a token (batch 1 about 1.3x faster),\n"
           "                      logits within bf16 rounding\n"
           "                      (default f32; the GPU ignores it)\n"
           "  --threads N, --device DEV, --quiet\n"
           "\nExamples (run from the source tree):\n"
           "  ssm-generate runs/try --length 200 --seed 2\n"
           "  ssm-generate runs/try --prompt ACGTACGT --length 100 --temperature 0.8 --samples 2\n");
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    static struct option opts[] = {
        {"prompt", required_argument, 0, 'p'},  {"prompt-file", required_argument, 0, 'f'},
        {"length", required_argument, 0, 'n'},  {"samples", required_argument, 0, 'S'},
        {"temperature", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'},   {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"device", required_argument, 0, 'd'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},       {"input", required_argument, 0, 'i'},
        {"weights", required_argument, 0, 'w'},
        {0, 0, 0, 0}};
    const char *prompt = NULL, *prompt_file = NULL, *device = "auto", *input = NULL;
    long length = 256, samples = 1, seed = 1, threads = 0;
    ssm_decode_weights weights = SSM_DECODE_F32;
    sampler sm = {.temperature = 1, .top_p = 1, .top_k = 0};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (o) {
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'i': input = optarg; break;
        case 'n': length = strtol(optarg, &end, 10); if (*end || length < 1) return cli_usage("--length takes a positive integer"); break;
        case 'S': samples = strtol(optarg, &end, 10); if (*end || samples < 1 || samples > 4096) return cli_usage("--samples takes an integer in [1, 4096]"); break;
        case 'T': sm.temperature = strtod(optarg, &end); if (*end || !(sm.temperature >= 0)) return cli_usage("--temperature takes a number >= 0"); break;
        case 'k': sm.top_k = (int)strtol(optarg, &end, 10); if (*end || sm.top_k < 0) return cli_usage("--top-k takes an integer >= 0"); break;
        case 'P': sm.top_p = strtod(optarg, &end); if (*end || !(sm.top_p > 0 && sm.top_p <= 1)) return cli_usage("--top-p takes a number in (0, 1]"); break;
        case 's': seed = strtol(optarg, &end, 10); if (*end) return cli_usage("--seed takes an integer"); break;
        case 't': threads = strtol(optarg, &end, 10); if (*end || threads < 0) return cli_usage("--threads takes an integer >= 0"); break;
        case 'd': device = optarg; break;
        case 'w':
            if (!strcmp(optarg, "f32")) weights = SSM_DECODE_F32;
            else if (!strcmp(optarg, "bf16")) weights = SSM_DECODE_BF16;
            else return cli_usage("--weights takes f32 or bf16");
            break;
        case 'q': cli_quiet = 1; break;
        case 'h': usage(); return 0;
        case 'V': printf("ssm-generate %s\n", SSM_VERSION); return 0;
        default: return cli_usage("unknown option");
        }
    }
    if (argc - optind != 1) return cli_usage("need one run directory or checkpoint");
    if (prompt && prompt_file) return cli_usage("give --prompt or --prompt-file, not both");
    int dev;
    if (cli_device(device, &dev, NULL)) return cli_fail();
    ssm_set_threads((int)threads);
    cli_trained tr;
    if (cli_load_trained(argv[optind], &tr)) return cli_fail();
    if (!ssm_config_causal(&tr.model->config)) {
        int rc = cli_error("%s: the model is bidirectional (%s): each position sees the whole "
                           "sequence, so it cannot generate left to right (no step mode)",
                           argv[optind], tr.model->config.rcps ? "RCPS" : "bimamba layers");
        cli_trained_free(&tr);
        return rc;
    }
    cli_device_fallback(device, &tr.model->config, &dev, NULL);
    if ((dev >= 0 && ssm_model_use_device(tr.model, NULL, dev)) ||
        (dev < 0 && ssm_model_set_decode_weights(tr.model, weights))) {
        cli_trained_free(&tr);
        return cli_fail();
    }
    const ssm_task_ops *ops = tr.ops;
    if (input || ops->generate_file) { /* the task continues a file itself (task ABI v2) */
        int rc = !ops->generate_file ? cli_error("--input: the task '%s' continues no file", ops->name)
               : !input ? cli_error("the task '%s' continues a file: give it with --input FILE", ops->name)
               : ops->generate_file(tr.task, tr.model, input, stdout) ? cli_fail() : 0;
        cli_trained_free(&tr);
        return rc;
    }
    int rc = CLI_EXIT_INPUT, B = (int)samples;
    int V = tr.model->config.vocab_size;
    int32_t *ptok = NULL, *out = NULL, *col = NULL;
    float *logits = NULL;
    ssm_state *st = NULL;
    size_t np = 0;
    if (!ops->bos_token || !ops->write_tokens) {
        rc = cli_error("the task '%s' cannot generate", ops->name);
        goto done;
    }
    sm.V = ops->vocab_size(tr.task);
    if (sm.V > V) sm.V = V;
    sm.ok = malloc(sm.V);
    if (!sm.ok) { rc = cli_error("out of memory"); goto done; }
    int n_ok = 0;
    for (int v = 0; v < sm.V; v++)
        n_ok += sm.ok[v] = ops->can_generate ? ops->can_generate(tr.task, v) != 0
                                             : v != ops->bos_token(tr.task);
    if (!n_ok) { rc = cli_error("the task '%s' allows no token to be generated", ops->name); goto done; }
    if (B > 1 && !strcmp(ops->symbol, "sample")) {
        rc = cli_error("--samples: one audio file at a time (each sample is a whole WAV on stdout)");
        goto done;
    }
    ssm_rng_seed(&sm.rng, (uint64_t)seed);
    if (prompt_file) {
        size_t len;
        char *text = read_all(prompt_file, &len);
        if (!text) { rc = cli_error("%s: cannot read the prompt", prompt_file); goto done; }
        ssm_status s = ops->encode ? ops->encode(tr.task, text, len, &ptok, &np)
                                   : ssm_set_error(SSM_ERR_UNSUPPORTED, "the task '%s' takes no prompt", ops->name);
        free(text);
        if (s) { rc = cli_fail(); goto done; }
    } else if (prompt) {
        if (!ops->encode) { rc = cli_error("the task '%s' takes no prompt", ops->name); goto done; }
        if (ops->encode(tr.task, prompt, strlen(prompt), &ptok, &np)) { rc = cli_fail(); goto done; }
    }
    sm.p = malloc(V * sizeof(double));
    sm.idx = malloc(V * sizeof(int));
    out = malloc((size_t)B * length * sizeof(int32_t));
    col = malloc((size_t)B * (np + 1) * sizeof(int32_t));
    logits = malloc((size_t)B * V * sizeof(float));
    if (!sm.p || !sm.idx || !out || !col || !logits || ssm_state_create(&tr.model->config, B, &st)) {
        rc = cli_error("out of memory");
        goto done;
    }
    /* the prompt (BOS + prompt tokens) in one parallel pass that leaves the state behind */
    int L0 = (int)np + 1;
    for (int b = 0; b < B; b++) {
        col[(size_t)b * L0] = ops->bos_token(tr.task);
        if (np) memcpy(col + (size_t)b * L0 + 1, ptok, np * sizeof(int32_t));
    }
    if (ssm_forward(tr.model, col, NULL, B, L0, st, NULL)) { rc = cli_fail(); goto done; }
    const float *pl = ssm_model_logits(tr.model);
    for (int b = 0; b < B; b++) memcpy(logits + (size_t)b * V, pl + ((size_t)b * L0 + L0 - 1) * V, V * sizeof(float));
    /* then one token at a time in step mode */
    cli_progress pr;
    cli_progress_start(&pr, length, 64, "token");
    double t0 = cli_now();
    int stream = B == 1 && !strcmp(ops->symbol, "byte"); /* text appears as it is made */
    if (stream && np) ops->write_tokens(tr.task, ptok, np, stdout);
    for (long i = 0; i < length; i++) {
        for (int b = 0; b < B; b++) col[b] = out[(size_t)b * length + i] = sample(&sm, logits + (size_t)b * V);
        if (stream) {
            ops->write_tokens(tr.task, col, 1, stdout);
            fflush(stdout);
        }
        if (i + 1 < length && ssm_step(tr.model, st, col, logits)) { rc = cli_fail(); goto done; }
        char extra[64], r[32];
        snprintf(extra, sizeof extra, "%s tokens/s", cli_si((double)B * (i + 1) / (cli_now() - t0), r, sizeof r));
        cli_progress_update(&pr, i + 1, extra);
    }
    cli_progress_end(&pr);
    if (!stream)
        for (int b = 0; b < B; b++) {
            /* the prompt and its continuation, in the task's format */
            int32_t *all = malloc((np + length) * sizeof(int32_t));
            if (np) memcpy(all, ptok, np * sizeof(int32_t));
            memcpy(all + np, out + (size_t)b * length, length * sizeof(int32_t));
            if (!strcmp(ops->symbol, "base")) /* FASTA: the header is ours to write */
                printf(">sample_%d seed=%ld temperature=%g length=%zu\n", b + 1, seed,
                       sm.temperature, np + (size_t)length);
            ssm_status s = ops->write_tokens(tr.task, all, np + length, stdout);
            free(all);
            if (s) { rc = cli_fail(); goto done; }
        }
    else
        fputc('\n', stdout);
    rc = fflush(stdout) ? cli_error("cannot write the output") : 0;
done:
    ssm_state_free(st);
    free(sm.p);
    free(sm.idx);
    free(sm.ok);
    free(out);
    free(col);
    free(logits);
    free(ptok);
    cli_trained_free(&tr);
    return rc;
}
