/* tiny.c: a program built against an installed libssm through pkg-config (test_install.sh):
 * a small model, one forward with targets, the loss printed. */
#include <math.h>
#include <stdio.h>

#include <ssm/ssm.h>

int main(void) {
    ssm_config c = ssm_config_default(16, 16, 2);
    ssm_model *m;
    if (ssm_config_validate(&c) || ssm_model_create(&c, &m) || ssm_model_init(m, 1)) {
        fprintf(stderr, "tiny: %s\n", ssm_last_error());
        return 1;
    }
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8}, targets[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    float loss;
    if (ssm_forward(m, tokens, targets, 1, 8, NULL, &loss)) {
        fprintf(stderr, "tiny: %s\n", ssm_last_error());
        return 1;
    }
    printf("libssm %s: %zu parameters, loss %.4f\n", SSM_VERSION, m->n_params, loss);
    ssm_model_free(m);
    return isfinite(loss) ? 0 : 1;
}
