/* A strict C11 consumer of the installed library: built against the
 * installed header and library alone (pkg-config or find_package). */
#include <stdio.h>
#include <xent.h>

int main(void)
{
    xent_handle_t h = NULL;
    xent_status st = xent_create_cpu(&h, 1);
    if (st != XENT_STATUS_SUCCESS) {
        fprintf(stderr, "xent_create_cpu: %s\n", xent_status_string(st));
        return 1;
    }
    /* two rows of the seed's example: p(target) = 0.7 and 0.2 */
    /* logits log p: row 0 p = (0.7, 0.2, 0.1), row 1 p = (0.2, 0.7, 0.1) */
    float logits[2 * 3] = {-0.35667494f, -1.60943791f, -2.30258509f,
                           -1.60943791f, -0.35667494f, -2.30258509f};
    long long targets[2] = {0, 0};
    float rows[2];
    xent_ce_desc d;
    xent_ce_desc_init(&d, 2, 3);
    d.reduction = XENT_REDUCTION_NONE;
    st = xent_ce_forward(h, &d, logits, targets, NULL, rows, NULL, NULL, 0);
    xent_destroy(h);
    if (st != XENT_STATUS_SUCCESS) {
        fprintf(stderr, "xent_ce_forward: %s\n", xent_status_string(st));
        return 1;
    }
    printf("xent %s: -log 0.7 = %.4f, -log 0.2 = %.4f\n", xent_version_string(),
           rows[0], rows[1]);
    return !(rows[0] > 0.3566f && rows[0] < 0.3568f && rows[1] > 1.6093f &&
             rows[1] < 1.6095f);
}
