/*
 * tokenizer_train.c — `alloy tokenizer train`: reads files and folders (through the data
 * layer's reader: recursive, name order, binary and hidden files skipped) into the BPE trainer,
 * then saves tokenizer.json.
 */
#include "cli.h"
#include "alloy/data.h"

#define FEED_DOC ((size_t)32 << 20) /* a longer file is fed in pieces cut at line ends */

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
    alloy_reader_options ro = {.format = ALLOY_DOC_TEXT, .max_doc = FEED_DOC};
    alloy_reader *r = NULL;
    alloy_bpe_trainer *tr = NULL;
    alloy_tokenizer *tok = NULL;
    alloy_bpe_train_options opt = {
        .vocab_size = vocab_size, .special_tokens = specials, .n_special = n_specials, .min_frequency = min_frequency, .quiet = quiet};
    alloy_status s = alloy_reader_open(&r, inputs, n_inputs, &ro);
    if (!s) s = alloy_bpe_trainer_create(&tr, &opt);
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 100);
    while (!s) {
        const char *doc;
        size_t n;
        bool end;
        if ((s = alloy_reader_next(r, &doc, &n, &end)) || end) break;
        if ((s = alloy_bpe_trainer_feed(tr, doc, n))) alloy_error_prefix("%s", alloy_reader_where(r));
        if (!quiet)
            alloy_progress_update(&prog, "reading: %llu files, %.1f MB", (unsigned long long)alloy_reader_get_stats(r)->files,
                                  (double)alloy_reader_get_stats(r)->bytes / 1e6);
    }
    if (!quiet) alloy_progress_done(&prog);
    const alloy_reader_stats *rs = r ? alloy_reader_get_stats(r) : NULL;
    if (!s && rs->bytes == 0)
        s = alloy_fail(ALLOY_STATUS_USAGE, "no text to learn from: %llu files read, %llu binary skipped",
                       (unsigned long long)rs->files, (unsigned long long)rs->skipped_binary);
    if (!s) s = alloy_bpe_trainer_finish(tr, &tok);
    if (!s) s = alloy_tokenizer_save(tok, out);
    if (!s) {
        uint64_t pieces = 0;
        int merges = 0;
        alloy_bpe_trainer_stats(tr, NULL, &pieces, &merges);
        printf("%s: vocabulary %d (256 bytes, %d merges, %d special) from %llu bytes in %llu files, %llu distinct pieces, %.1fs\n",
               out, alloy_tokenizer_vocab_size(tok), merges, n_specials, (unsigned long long)rs->bytes,
               (unsigned long long)rs->files, (unsigned long long)pieces, alloy_time_now() - t0);
    }
    alloy_tokenizer_destroy(tok);
    alloy_bpe_trainer_destroy(tr);
    alloy_reader_close(r);
    return s ? cli_fail("tokenizer", s) : 0;
}
