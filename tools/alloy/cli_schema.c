/*
 * cli_schema.c — the command's flags from the library's option schemas (alloy/options.h): a flag
 * per option, parsed by the library (alloy_options_set), what a resume may change decided by the
 * library (alloy_options_resume), and the library's errors about an option shown with its flag.
 */
#include "cli.h"

#include <string.h>

static const alloy_schema *current; /* the schema whose flags the verb parses (for messages) */

void cli_schema_flags(const alloy_schema *s, void *opts, cli_flag *flags, int *n, int cap) {
    static char names[256][40]; // the flags' names and rows live as long as the process
    static cli_option_ref refs[256];
    static int used, used_refs;
    current = s;
    for (int i = 0; i < s->n && *n < cap; i++) {
        const alloy_option *o = &s->rows[i];
        if (o->flags & ALLOY_OPT_NOFLAG) continue;
        const char *name = o->flag;
        if (!name || strchr(name, '_')) {
            if (used == 256) break;
            name = alloy_option_flag(o, names[used], sizeof names[used]);
            used++;
        }
        if (used_refs == 256) break;
        refs[used_refs] = (cli_option_ref){s, o, opts};
        flags[(*n)++] = (cli_flag){.name = name, .kind = CLI_OPTION, .dst = &refs[used_refs++], .seen = false};
    }
}

void cli_schema_given(const alloy_schema *s, const cli_flag *flags, int n, bool *set) {
    for (int i = 0; i < s->n; i++) set[i] = false;
    for (int k = 0; k < n; k++)
        if (flags[k].kind == CLI_OPTION && flags[k].seen) {
            const cli_option_ref *ref = flags[k].dst;
            if (ref->schema == s) set[ref->option - s->rows] = true;
        }
}

const char *cli_error_text(char *buf, size_t size) {
    const char *msg = alloy_last_error(), *opt = alloy_error_option();
    size_t k = opt ? strlen(opt) : 0;
    if (!opt || strncmp(msg, opt, k) != 0 || (msg[k] != ' ' && msg[k] != ':')) return msg;
    const alloy_option *o = current ? alloy_schema_find(current, opt) : NULL;
    char flag[64];
    if (o) alloy_option_flag(o, flag, sizeof flag);
    else {
        snprintf(flag, sizeof flag, "%s", opt);
        for (char *p = flag; *p; p++)
            if (*p == '_') *p = '-';
    }
    snprintf(buf, size, "--%s%s", flag, msg + k);
    return buf;
}

int cli_schema_resume(const char *verb, const alloy_schema *s, void *saved, const void *given, const cli_flag *flags,
                      int n, const char *except) {
    bool set[256] = {0};
    if (s->n > 256) return cli_usage(verb, "too many options");
    cli_schema_given(s, flags, n, set);
    const alloy_option *skip = except ? alloy_schema_find(s, except) : NULL;
    if (skip) set[skip - s->rows] = false;
    alloy_status st = alloy_options_resume(s, saved, given, set);
    return st ? cli_fail(verb, st) : 0;
}
