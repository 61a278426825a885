/*
 * tokenizer_train.c — `alloy tokenizer train`: placeholder until the trainer lands.
 */
#include "cli.h"

int cmd_tokenizer_train(const char *const *inputs, int n_inputs, int vocab_size, const char *const *specials, int n_specials,
                        int min_frequency, bool quiet, const char *out) {
    (void)inputs, (void)n_inputs, (void)vocab_size, (void)specials, (void)n_specials, (void)min_frequency, (void)quiet, (void)out;
    alloy_fail(ALLOY_STATUS_USAGE, "tokenizer training is not built yet");
    return cli_fail("tokenizer", ALLOY_STATUS_USAGE);
}
