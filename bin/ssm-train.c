/* ssm-train: train a model from a YAML recipe.
 *
 *   ssm-train RECIPE.yaml [--set KEY=VALUE]... [--output DIR] [--force]
 *   ssm-train --resume RUN_DIR [RECIPE.yaml]
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "task_io.h"
#include "train.h"

static void usage(void) {
    printf("Usage: ssm-train RECIPE.yaml [options]\n"
           "  or:  ssm-train --resume RUN_DIR [options]\n"
           "\n"
           "Train a Mamba model on the task and data a recipe names (see docs/recipes.md).\n"
           "\n"
           "  --set KEY=VALUE   override a recipe key, e.g. --set train.lr=1e-3 (repeatable)\n"
           "  --output DIR      run directory (overrides output.dir)\n"
           "  --force           overwrite an existing run directory\n"
           "  --resume DIR      continue the run in DIR exactly where it stopped\n"
           "  --device DEV      auto, cpu, cuda or cuda:N (overrides train.device)\n"
           "  --threads N       CPU threads (overrides train.threads; 0 = all cores)\n"
           "  --stop-after N    stop after N steps of this invocation, saving as Ctrl-C does\n"
           "  --quiet           no progress or notes on stderr\n"
           "  --help, --version\n"
           "\n"
           "The run directory receives recipe.yaml (the resolved recipe), model.safetensors and\n"
           "config.json (a Hugging Face Mamba checkpoint), train_state.safetensors (optimizer,\n"
           "step, data position) and metrics.jsonl. Ctrl-C saves and stops; --resume continues.\n"
           "\nExamples (run from the source tree; the report is runs/try/report.html):\n"
           "  ssm-train recipes/dna.yaml --output runs/try --set train.steps=4 --set train.batch_size=2\n"
           "  ssm-train --resume runs/try --set train.steps=8\n");
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    static struct option opts[] = {
        {"set", required_argument, 0, 's'},    {"output", required_argument, 0, 'o'},
        {"force", no_argument, 0, 'f'},        {"resume", required_argument, 0, 'r'},
        {"device", required_argument, 0, 'd'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},      {"stop-after", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    const char *sets[256];
    int n_sets = 0;
    const char *output = NULL, *device = NULL, *threads = NULL;
    train_options topt = {0};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 's':
            if (n_sets == 256) return cli_usage("too many --set options");
            sets[n_sets++] = optarg;
            break;
        case 'o': output = optarg; break;
        case 'f': topt.force = 1; break;
        case 'r': topt.resume_dir = optarg; break;
        case 'd': device = optarg; break;
        case 't': threads = optarg; break;
        case 'q': cli_quiet = 1; break;
        case 'S': {
            char *end;
            topt.stop_after = strtoll(optarg, &end, 10);
            if (*end || topt.stop_after < 1) return cli_usage("--stop-after takes a positive step count");
            break;
        }
        case 'h': usage(); return 0;
        case 'V': printf("ssm-train %s\n", SSM_VERSION); return 0;
        default: return cli_usage("unknown option");
        }
    }
    if (optind + 1 < argc) return cli_usage("one recipe at a time (got '%s' and '%s')", argv[optind], argv[optind + 1]);
    const char *recipe_path = optind < argc ? argv[optind] : NULL;
    char saved[4096];
    if (topt.resume_dir) {
        snprintf(saved, sizeof saved, "%s/recipe.yaml", topt.resume_dir);
        if (!cli_exists(saved))
            return cli_error("%s: not a run directory to resume (no recipe.yaml)", topt.resume_dir);
        if (!recipe_path) recipe_path = saved;
    }
    if (!recipe_path) return cli_usage("no recipe given");

    ssm_recipe *recipe;
    if (ssm_recipe_load(recipe_path, &recipe)) return cli_fail();
    int rc = CLI_EXIT_INPUT;
    const ssm_task_ops *ops = NULL;
    void *task = NULL;
    train_settings set;
    char buf[4200];
    for (int i = 0; i < n_sets; i++)
        if (ssm_recipe_set(recipe, sets[i])) goto fail;
    if (output) {
        snprintf(buf, sizeof buf, "output.dir=%s", output);
        if (ssm_recipe_set(recipe, buf)) goto fail;
    }
    if (device) {
        snprintf(buf, sizeof buf, "train.device=%s", device);
        if (ssm_recipe_set(recipe, buf)) goto fail;
    }
    if (threads) {
        snprintf(buf, sizeof buf, "train.threads=%s", threads);
        if (ssm_recipe_set(recipe, buf)) goto fail;
    }
    if (cli_task_create(recipe, 1, &ops, &task)) goto fail;
    if (train_settings_read(recipe, ops->vocab_size(task), &set) ||
        task_model_io(ops, task, &set.model, &set.seq_len))
        goto fail;
    if (topt.resume_dir) set.run_dir = topt.resume_dir;
    rc = train_run(recipe, ops, task, &set, &topt);
    goto done;
fail:
    rc = cli_fail();
done:
    if (task) ops->destroy(task);
    ssm_recipe_free(recipe);
    return rc;
}
