/* fuzz_vcf.c: fuzz target for ssm-score --vcf (bin/vcf_score.c): VCF text through htslib, the
 * alleles against the reference, the windows around them, the records written back.
 *
 * At startup a tiny DNA run (recipe.yaml, an untrained model.safetensors: vocab of the dna
 * task, d_model 8, one layer) and a reference (chrA, 300 bases; chrB, 120) are written to a
 * temporary folder; each input is written as a .vcf and scored into another .vcf with short
 * flanks. Errors are fine (exit status CLI_EXIT_INPUT with a message); a crash, a leak or
 * undefined behaviour is a bug, and so is an output left behind by a failed run.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_vcf), and
 *   build-fuzz/fuzz_vcf -close_fd_mask=2 tests/fuzz/vcf_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_vcf'), the standalone driver runs
 * tests/fuzz/vcf_corpus (SNVs, MNV, indels at contig edges, a REF mismatch, symbolic and
 * breakend alleles, '*', no ALT, an unknown contig) and deterministic mutations of each
 * (SSM_FUZZ_MUTATIONS, default 50; SSM_FUZZ_SEED). The program's messages go to /dev/null. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssm/checkpoint.h"
#include "../../bin/vcf_score.h"
#include "../../tasks/dna/dna.h"
#include "fuzz_driver.h"

static const char chrA[] = "CCGTAATGCCTTTCCCTAACAGAGTTTTTCGAACTCGTGTTGTCGAGCGACGGAATTAGATCAGTTAAATGGCAGAAAACTGGCAGGGCTTTTAGTCGTGGGATGATCAGTGGGTAAAGGTGGCGCGGGGTAACGCGCGCTAAGGCTCAGCTGCAACGCGGAGCTGGTGTGTTATCCATTCATGGCAGACAACTAATACGCATAAGCGTAGCCAACCGCATTAGCGTATGAACAAAATAATGCGAGTTGGGCGTACATACAGTTATAGTGTTTACCGATCTCAGGGATATAGAATCCTAA";
static const char chrB[] = "ATCAGAAATGGAACAAAGCACCCTTGGTGTATCTCTTCTCCATTTCCGCCGCGTGCGAGTTCCGCGTCTTCTATATATCCACGCCGCCAGCAGCTAAAAGGAGTGAAGGTTTACTTCGAG";

static char workdir[256], run_dir[300], ref_path[300], in_path[300], out_path[300];
static cli_trained trained;
static long n_scored;

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
}

static void remove_workdir(void) {
    cli_trained_free(&trained);
    char p[400];
    const char *names[] = {"recipe.yaml", "model.safetensors"};
    for (int i = 0; i < 2; i++) snprintf(p, sizeof p, "%s/%s", run_dir, names[i]), unlink(p);
    rmdir(run_dir);
    snprintf(p, sizeof p, "%s.fai", ref_path), unlink(p);
    unlink(ref_path), unlink(in_path), unlink(out_path);
    rmdir(workdir);
}

static void setup(void) {
    if (workdir[0]) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(workdir, sizeof workdir, "%s/fuzz_vcf.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(workdir) != NULL, "mkdtemp %s", workdir);
    snprintf(run_dir, sizeof run_dir, "%s/run", workdir);
    snprintf(ref_path, sizeof ref_path, "%s/ref.fa", workdir);
    snprintf(in_path, sizeof in_path, "%s/in.vcf", workdir);
    snprintf(out_path, sizeof out_path, "%s/out.vcf", workdir);
    CHECK(mkdir(run_dir, 0700) == 0, "mkdir %s", run_dir);
    char p[400], fa[1024] = ">chrA\n";
    for (size_t i = 0; i < sizeof chrA - 1; i += 60) snprintf(fa + strlen(fa), sizeof fa - strlen(fa), "%.60s\n", chrA + i);
    strcat(fa, ">chrB\n");
    for (size_t i = 0; i < sizeof chrB - 1; i += 60) snprintf(fa + strlen(fa), sizeof fa - strlen(fa), "%.60s\n", chrB + i);
    write_text(ref_path, fa);
    snprintf(p, sizeof p, "%s/recipe.yaml", run_dir);
    write_text(p, "model: {d_model: 8, n_layer: 1, d_state: 4}\ntask: {name: dna}\n");
    ssm_config c = ssm_config_default(DNA_VOCAB_SIZE, 8, 1);
    c.d_state = 4;
    ssm_model *m = NULL;
    CHECK(ssm_model_create(&c, &m) == SSM_OK && ssm_model_init(m, 1) == SSM_OK, "model: %s", ssm_last_error());
    snprintf(p, sizeof p, "%s/model.safetensors", run_dir);
    CHECK(ssm_checkpoint_save(m, p, NULL) == SSM_OK, "save: %s", ssm_last_error());
    ssm_model_free(m);
    CHECK(cli_load_trained(run_dir, &trained) == SSM_OK, "load: %s", ssm_last_error());
    atexit(remove_workdir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    FILE *f = fopen(in_path, "wb");
    CHECK(f && (size == 0 || fwrite(data, 1, size, f) == size) && fclose(f) == 0, "write %s", in_path);
    vcf_options opt = {.vcf = in_path, .reference = ref_path, .output = out_path, .left = 16,
                       .right = 4, .batch = 4, .window = 32, .command = "fuzz_vcf"};
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    int rc = vcf_score_run(&trained, &opt);
    fflush(stderr);
    dup2(saved, 2);
    close(saved), close(null);
    CHECK(rc == 0 || rc == CLI_EXIT_INPUT, "exit status %d", rc);
    struct stat st;
    if (rc) CHECK(stat(out_path, &st) != 0, "%s left behind by a failed run", out_path);
    else n_scored++;
    unlink(out_path);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
static const char punct[] = "\t\n#<>[]:,.*ACGTN=;0123456789";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

static void summary(int n, int generated, long runs) {
    (void)generated;
    printf("fuzz_vcf: %d inputs, %ld runs, %ld scored to the end, no failure\n", n, runs, n_scored);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_vcf", .mutations = 50, .truncations = 48,
                                      .mutate = mutate, .summary = summary};
#endif
