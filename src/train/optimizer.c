/*
 * optimizer.c — AdamW over the parameter arena with global-norm clipping, and the learning
 * rate schedule (linear warm-up, cosine decay).
 *
 * The moments mirror the arena, so one flat loop per tensor does the update; the table says
 * which tensors decay (matrices and embeddings) and which do not (norms and biases).
 */
#include "alloy/train.h"

#include <math.h>
#include <string.h>

alloy_adamw_config alloy_adamw_defaults(void) {
    alloy_adamw_config c = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f};
    return c;
}

alloy_status alloy_optimizer_create(alloy_optimizer **out, const alloy_model *model, const alloy_adamw_config *cfg) {
    *out = NULL;
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "AdamW betas must lie in [0, 1)");
    if (!(cfg->eps > 0.0f) || !(cfg->weight_decay >= 0.0f) || !(cfg->grad_clip >= 0.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "AdamW eps must be > 0, weight decay and clip >= 0");
    alloy_optimizer *o = alloy_calloc(1, sizeof *o);
    if (!o) return ALLOY_STATUS_NOMEM;
    o->cfg = *cfg;
    o->n = model->num_params;
    o->m = alloy_pages_alloc(sizeof(float) * o->n);
    o->v = alloy_pages_alloc(sizeof(float) * o->n);
    if (!o->m || !o->v) {
        alloy_optimizer_destroy(o);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the optimiser state (%zu floats)", o->n);
    }
    *out = o;
    return ALLOY_STATUS_OK;
}

void alloy_optimizer_destroy(alloy_optimizer *o) {
    if (!o) return;
    alloy_free(o->frozen);
    alloy_pages_free(o->m, sizeof(float) * o->n);
    alloy_pages_free(o->v, sizeof(float) * o->n);
    alloy_free(o);
}

alloy_status alloy_optimizer_step_groups(alloy_optimizer *const *opts, alloy_model *const *models, int n, float lr,
                                         float *grad_norm) {
    double total = 0.0;
    for (int g = 0; g < n; g++) {
        alloy_optimizer *o = opts[g];
        alloy_model *model = models[g];
        if (o->n != model->num_params) return alloy_fail(ALLOY_STATUS_INTERNAL, "optimiser does not match the model");
        for (int i = 0; o->frozen && i < model->n_tensors; i++)
            if (o->frozen[i]) memset(model->grads_memory + model->tensors[i].offset, 0, sizeof(float) * model->tensors[i].numel);
        // padding between tensors stays zero in the grads, so the flat sum is the global norm
        total += sum_squares(model->grads_memory, (int64_t)model->num_params);
    }
    double norm = sqrt(total);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm)) return alloy_fail(ALLOY_STATUS_RANGE, "gradient norm is not finite (%g): training diverged", norm);
    float scale = 1.0f;
    if (n > 0 && opts[0]->cfg.grad_clip > 0.0f) {
        float coef = opts[0]->cfg.grad_clip / ((float)norm + 1e-6f);
        if (coef < 1.0f) scale = coef;
    }
    for (int g = 0; g < n; g++) {
        alloy_optimizer *o = opts[g];
        alloy_model *model = models[g];
        o->step++;
        for (int i = 0; i < model->n_tensors; i++) {
            const alloy_tensor_info *t = &model->tensors[i];
            if (o->frozen && o->frozen[i]) continue;
            adamw_update(model->params_memory + t->offset, model->grads_memory + t->offset, o->m + t->offset,
                         o->v + t->offset, (int64_t)t->numel, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps,
                         t->decay ? o->cfg.weight_decay : 0.0f, scale, o->step);
        }
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_optimizer_step(alloy_optimizer *o, alloy_model *model, float lr, float *grad_norm) {
    return alloy_optimizer_step_groups(&o, &model, 1, lr, grad_norm);
}

const char *alloy_train_only_name(alloy_train_only t) {
    return t == ALLOY_TRAIN_ONLY_ROUTER ? "router" : t == ALLOY_TRAIN_ONLY_MLP ? "mlp" : "all";
}

alloy_status alloy_train_only_parse(const char *name, alloy_train_only *out) {
    if (!strcmp(name, "all")) *out = ALLOY_TRAIN_ONLY_ALL;
    else if (!strcmp(name, "router")) *out = ALLOY_TRAIN_ONLY_ROUTER;
    else if (!strcmp(name, "mlp")) *out = ALLOY_TRAIN_ONLY_MLP;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown train_only value \"%s\" (known: all, router, mlp)", name ? name : "");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_optimizer_train_only(alloy_optimizer *o, const alloy_model *model, alloy_train_only which) {
    alloy_free(o->frozen);
    o->frozen = NULL;
    if (which == ALLOY_TRAIN_ONLY_ALL) return ALLOY_STATUS_OK;
    bool router = which == ALLOY_TRAIN_ONLY_ROUTER;
    if (router && model->config.n_experts == 0)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "train_only", "router: the model has no experts (build one with alloy moe)");
    if (!(o->frozen = alloy_calloc((size_t)model->n_tensors, 1))) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < model->n_tensors; i++) {
        const char *name = model->tensors[i].name;
        o->frozen[i] = router ? !alloy_tensor_is_router(name) : !alloy_tensor_is_mlp(name);
    }
    return ALLOY_STATUS_OK;
}

double alloy_schedule_lr(const alloy_schedule *s, int64_t step) {
    if (step < s->warmup_steps) return s->max_lr * (double)(step + 1) / (double)s->warmup_steps;
    int64_t decay_steps = s->total_steps - s->warmup_steps;
    if (decay_steps <= 1) return s->max_lr;
    double progress = (double)(step - s->warmup_steps) / (double)(decay_steps - 1);
    if (progress > 1.0) progress = 1.0;
    return s->min_lr + 0.5 * (s->max_lr - s->min_lr) * (1.0 + cos(M_PI * progress));
}
