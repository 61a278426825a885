/*
 * tokenizer_train.c — `alloy tokenizer train`: a BPE learned from files and folders
 * (alloy_bpe_train_files), saved as tokenizer.json.
 */
#include "cli.h"
#include "alloy/data.h"

int cmd_tokenizer_train(const char *const *inputs, int n_inputs, int vocab_size, const char *const *specials, int n_specials,
                        int min_frequency, bool quiet, const char *out) {
    static const char *const default_specials[] = {"<|endoftext|>"};
    if (n_specials == 0) { // the default; --special "" asks for none
        specials = default_specials;
        n_specials = 1;
    } else if (n_specials == 1 && specials[0][0] == '\0') {
        n_specials = 0;
    }
    if (min_frequency < 1) return cli_usage("tokenizer", "--min-frequency must be >= 1");
    double t0 = alloy_time_now();
    alloy_bpe_train_options opt = {
        .vocab_size = vocab_size, .special_tokens = specials, .n_special = n_specials, .min_frequency = min_frequency, .quiet = quiet};
    alloy_tokenizer *tok = NULL;
    alloy_bpe_files_report rep;
    alloy_status s = alloy_bpe_train_files(&tok, inputs, n_inputs, &opt, &rep);
    if (!s) s = alloy_tokenizer_save(tok, out);
    if (!s)
        printf("%s: vocabulary %d (256 bytes, %d merges, %d special) from %llu bytes in %llu files, %llu distinct pieces, %.1fs\n",
               out, alloy_tokenizer_vocab_size(tok), rep.merges, n_specials, (unsigned long long)rep.bytes,
               (unsigned long long)rep.files, (unsigned long long)rep.pieces, alloy_time_now() - t0);
    alloy_tokenizer_destroy(tok);
    return s ? cli_fail("tokenizer", s) : 0;
}
