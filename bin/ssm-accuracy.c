/* ssm-accuracy: token accuracy (argmax = target on the scored positions) of a trained model on
 * its task's validation batches, at one or several sequence lengths. Each sequence runs in
 * windows of --window positions with the recurrent state carried across them, so memory stays
 * that of one window at any length (accuracy.h). The Mamba paper's induction-heads and
 * selective-copying tables (docs/results.md) come from here.
 *
 *   ssm-accuracy RUN_DIR_OR_CHECKPOINT [--lengths 2^6..2^16,1000] [--batches N] ...
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accuracy.h"
#include "cli.h"

enum { MAX_LENGTHS = 64 };

static void usage(void) {
    printf("usage: ssm-accuracy RUN_DIR_OR_CHECKPOINT [options]\n"
           "\n"
           "Token accuracy of a trained model on its task's validation sequences (tasks that make\n"
           "sequences of any length: selective_copy at its own length, induction_heads at any).\n"
           "Prints one line per length: length, accuracy, correct/scored, seconds.\n"
           "\n"
           "  --lengths LIST      comma-separated lengths, each N or 2^A..2^B (every power of two\n"
           "                      from 2^A to 2^B); default: the recipe's train.seq_len\n"
           "  --batches N         validation batches per length (default 8)\n"
           "  --batch-size B      sequences per batch (default 16)\n"
           "  --window W          positions per forward, state carried between (default 4096)\n"
           "  --seed S            seed of the validation batches (default 1)\n"
           "  --json FILE         also write one JSON object per length to FILE\n"
           "  --threads N, --device DEV, --quiet\n");
}

/* "2^6..2^16,1000" -> lengths; 0 on a malformed list */
static int parse_lengths(const char *text, long *out, int *n) {
    *n = 0;
    for (const char *p = text; *p;) {
        char *end;
        int a, b;
        if (sscanf(p, "2^%d..2^%d", &a, &b) == 2) {
            if (a < 0 || b < a || b > 30) return 0;
            for (int k = a; k <= b; k++) {
                if (*n == MAX_LENGTHS) return 0;
                out[(*n)++] = 1L << k;
            }
            end = strchr(p, ',');
            end = end ? end : (char *)p + strlen(p);
        } else {
            long v = strtol(p, &end, 10);
            if (end == p || v < 1 || v > (1L << 30) || *n == MAX_LENGTHS) return 0;
            out[(*n)++] = v;
        }
        if (*end && *end != ',') return 0;
        p = *end ? end + 1 : end;
    }
    return *n > 0;
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    static struct option opts[] = {
        {"lengths", required_argument, 0, 'l'}, {"batches", required_argument, 0, 'n'},
        {"batch-size", required_argument, 0, 'b'}, {"window", required_argument, 0, 'w'},
        {"seed", required_argument, 0, 's'},    {"json", required_argument, 0, 'j'},
        {"threads", required_argument, 0, 't'}, {"device", required_argument, 0, 'd'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},       {0, 0, 0, 0}};
    const char *device = "auto", *json = NULL, *lengths_text = NULL;
    long batches = 8, batch_size = 16, window = 4096, seed = 1, threads = 0;
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (o) {
        case 'l': lengths_text = optarg; break;
        case 'n': batches = strtol(optarg, &end, 10); if (*end || batches < 1) return cli_usage("--batches takes a positive integer"); break;
        case 'b': batch_size = strtol(optarg, &end, 10); if (*end || batch_size < 1 || batch_size > 4096) return cli_usage("--batch-size takes an integer in [1, 4096]"); break;
        case 'w': window = strtol(optarg, &end, 10); if (*end || window < 1 || window > (1L << 24)) return cli_usage("--window takes an integer in [1, 16777216]"); break;
        case 's': seed = strtol(optarg, &end, 10); if (*end) return cli_usage("--seed takes an integer"); break;
        case 'j': json = optarg; break;
        case 't': threads = strtol(optarg, &end, 10); if (*end || threads < 0) return cli_usage("--threads takes an integer >= 0"); break;
        case 'd': device = optarg; break;
        case 'q': cli_quiet = 1; break;
        case 'h': usage(); return 0;
        case 'V': printf("ssm-accuracy %s\n", SSM_VERSION); return 0;
        default: return cli_usage("unknown option");
        }
    }
    if (argc - optind != 1) return cli_usage("need one run directory or checkpoint");
    long lengths[MAX_LENGTHS];
    int n_lengths = 0;
    if (lengths_text && !parse_lengths(lengths_text, lengths, &n_lengths))
        return cli_usage("--lengths takes a comma-separated list of lengths or 2^A..2^B ranges "
                         "(at most %d lengths, each at most 2^30), got '%s'", MAX_LENGTHS, lengths_text);
    int dev;
    if (cli_device(device, &dev, NULL)) return cli_fail();
    ssm_set_threads((int)threads);
    cli_trained tr;
    if (cli_load_trained(argv[optind], &tr)) return cli_fail();
    int rc = CLI_EXIT_INPUT;
    FILE *out = NULL;
    cli_device_fallback(device, &tr.model->config, &dev, NULL);
    if (dev >= 0 && ssm_model_use_device(tr.model, NULL, dev)) goto fail;
    if (!n_lengths) { /* the training length */
        ssm_node *train = ssm_node_get(tr.recipe->root, "train");
        long long L;
        if (ssm_node_int(tr.recipe, train, "seq_len", 1024, 1, 1 << 30, &L)) goto fail;
        lengths[n_lengths++] = (long)L;
    }
    if (json && !(out = fopen(json, "w"))) {
        ssm_set_error(SSM_ERR_IO, "%s: cannot open for writing", json);
        goto fail;
    }
    printf("%10s  %9s  %15s  %8s\n", "length", "accuracy", "correct/scored", "seconds");
    for (int i = 0; i < n_lengths; i++) {
        accuracy_count c;
        double t0 = cli_now();
        if (accuracy_eval(tr.model, tr.ops, tr.task, (int)lengths[i], (int)batch_size, (int)batches,
                          (int)window, (uint64_t)seed, &c))
            goto fail;
        double acc = c.scored ? (double)c.correct / c.scored : 0, dt = cli_now() - t0;
        printf("%10ld  %8.2f%%  %7lld/%-7lld  %8.1f\n", lengths[i], 100 * acc, (long long)c.correct,
               (long long)c.scored, dt);
        fflush(stdout);
        if (out)
            fprintf(out, "{\"length\":%ld,\"accuracy\":%.6f,\"correct\":%lld,\"scored\":%lld,"
                    "\"window\":%ld,\"seconds\":%.2f}\n", lengths[i], acc, (long long)c.correct,
                    (long long)c.scored, window, dt);
    }
    rc = CLI_EXIT_OK;
    goto done;
fail:
    rc = cli_fail();
done:
    if (out && fclose(out) && rc == CLI_EXIT_OK) rc = cli_error("%s: write failed", json);
    cli_trained_free(&tr);
    return rc;
}
