/*
 * bpe_files.c — a BPE tokenizer learned from files and folders (alloy_bpe_train_files of
 * alloy/data.h): the data layer's reader (recursive, name order, binary and hidden files
 * skipped) feeds the tokenizer module's trainer, each file as text documents of at most 32 MiB
 * (a longer file is fed in pieces cut at line ends).
 */
#include "alloy/data.h"

#define FEED_DOC ((size_t)32 << 20) /* the longest document fed at once */

/* Feeds every document of r to tr, with progress on stderr unless quiet. */
static alloy_status feed_all(alloy_reader *r, alloy_bpe_trainer *tr, bool quiet) {
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 100);
    alloy_status s = ALLOY_STATUS_OK;
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
    return s;
}

alloy_status alloy_bpe_train_files(alloy_tokenizer **out, const char *const *paths, int n_paths,
                                   const alloy_bpe_train_options *opt, alloy_bpe_files_report *report) {
    *out = NULL;
    alloy_reader_options ro = {.format = ALLOY_DOC_TEXT, .max_doc = FEED_DOC};
    alloy_reader *r = NULL;
    alloy_bpe_trainer *tr = NULL;
    alloy_status s = alloy_reader_open(&r, paths, n_paths, &ro);
    if (!s) s = alloy_bpe_trainer_create(&tr, opt);
    if (!s) s = feed_all(r, tr, opt->quiet);
    const alloy_reader_stats *rs = r ? alloy_reader_get_stats(r) : NULL;
    if (!s && rs->bytes == 0)
        s = alloy_fail(ALLOY_STATUS_USAGE, "no text to learn from: %llu files read, %llu binary skipped",
                       (unsigned long long)rs->files, (unsigned long long)rs->skipped_binary);
    if (!s) s = alloy_bpe_trainer_finish(tr, out);
    if (!s && report) {
        *report = (alloy_bpe_files_report){.files = rs->files, .skipped_binary = rs->skipped_binary, .bytes = rs->bytes};
        alloy_bpe_trainer_stats(tr, NULL, &report->pieces, &report->merges);
    }
    alloy_bpe_trainer_destroy(tr);
    alloy_reader_close(r);
    return s;
}
