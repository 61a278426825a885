/*
 * alloy/options.h — option schemas: one table per options struct says each option's name, type,
 * place in the struct, whether it may change when a run resumes, and its one-line doc. The table
 * drives saving the options with a run (trainer_state.json), reading them back, merging what a
 * resume may change, and the command's flags (--name, with '_' written '-'), so that a C program
 * gets the same policy as the command.
 *
 *     static const alloy_option rows[] = {
 *         ALLOY_OPT_ROW(my_options, steps, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "optimiser steps"),
 *         ...
 *     };
 *     const alloy_schema schema = {rows, sizeof rows / sizeof rows[0]};
 *     cJSON *j = alloy_options_save(&schema, &opts);
 *     alloy_options_load(&schema, &opts, j, "trainer_state.json");
 *
 * Errors about one option name it with alloy_fail_option, so that the command can show the flag
 * ("--lr must lie in (0, 10)") where the library says the option ("lr must lie in (0, 10)").
 */
#ifndef ALLOY_OPTIONS_H
#define ALLOY_OPTIONS_H

#include "alloy/base.h"

#include <stddef.h>

ALLOY_BEGIN_DECLS

struct cJSON;

typedef enum alloy_opt_type {
    ALLOY_OPT_STRING, /* char[size], saved as a string */
    ALLOY_OPT_INT,    /* int */
    ALLOY_OPT_INT64,  /* int64_t */
    ALLOY_OPT_UINT64, /* uint64_t, saved as a decimal string (a double would lose bits) */
    ALLOY_OPT_FLOAT,  /* float */
    ALLOY_OPT_DOUBLE, /* double */
    ALLOY_OPT_BOOL,   /* bool */
    ALLOY_OPT_ENUM,   /* an enum (int-sized) whose value v is saved as choices[v] */
} alloy_opt_type;

enum {
    ALLOY_OPT_RESUME = 1u,   /* may change when a run resumes (cadences, --steps) */
    ALLOY_OPT_OPTIONAL = 2u, /* may be absent from a saved state (added later): keeps the default */
    ALLOY_OPT_NOSAVE = 4u,   /* not saved with the run (quiet, log_every): always the caller's */
    ALLOY_OPT_NOFLAG = 8u,   /* no command flag (set by the library or a verb of its own) */
    ALLOY_OPT_VALUED = 16u,  /* BOOL: the flag takes a value (on or off) instead of none */
};

typedef struct alloy_option {
    const char *name;            /* the key in the saved state */
    alloy_opt_type type;
    size_t offset;               /* where in the options struct */
    size_t size;                 /* its bytes (STRING: the buffer's) */
    unsigned flags;              /* ALLOY_OPT_* */
    const char *const *choices;  /* ENUM: the names of 0, 1, ... (NULL-terminated) */
    const char *flag;            /* the command's flag without "--" (NULL: name with '_' as '-') */
    const char *doc;             /* one line for --help (may be NULL) */
} alloy_option;

/* A row for field FIELD of struct type TYPE, named as the field. */
#define ALLOY_OPT_ROW(TYPE, FIELD, KIND, FLAGS, DOC)                                                \
    {#FIELD, KIND, offsetof(TYPE, FIELD), sizeof(((TYPE *)0)->FIELD), FLAGS, NULL, NULL, DOC}
/* The same with a saved name and a flag of their own, and an enum's names. */
#define ALLOY_OPT_NAMED(TYPE, FIELD, NAME, FLAG, KIND, FLAGS, CHOICES, DOC)                         \
    {NAME, KIND, offsetof(TYPE, FIELD), sizeof(((TYPE *)0)->FIELD), FLAGS, CHOICES, FLAG, DOC}

typedef struct alloy_schema {
    const alloy_option *rows;
    int n;
} alloy_schema;

/* The row named `name` (a saved name, or a flag: '-' and '_' alike), or NULL. */
const alloy_option *alloy_schema_find(const alloy_schema *s, const char *name);
/* The command's flag of a row (its flag, or its name with '_' as '-') into buf; returns buf. */
const char *alloy_option_flag(const alloy_option *o, char *buf, size_t size);

/* Every saved option of opts as a JSON object (NULL: out of memory). */
struct cJSON *alloy_options_save(const alloy_schema *s, const void *opts);
/* Reads the saved options of j into opts (which holds the defaults): FORMAT naming `what` and
 * the key when one is missing (unless OPTIONAL), of the wrong type, too long or not a choice. */
alloy_status alloy_options_load(const alloy_schema *s, void *opts, const struct cJSON *j, const char *what);
/* Sets the option `name` from text (a number, a choice's name, a string; a bool from true/on or
 * false/off): USAGE naming the option when the text does not fit. */
alloy_status alloy_options_set(const alloy_schema *s, void *opts, const char *name, const char *text);
/* On resume: saved takes every option of given whose given[i] is set and that may change on
 * resume (RESUME or NOSAVE); USAGE naming the first other one ("... cannot change when
 * resuming"). */
alloy_status alloy_options_resume(const alloy_schema *s, void *saved, const void *given, const bool *set);

/* ALLOY_STATUS status with the message "<option> <fmt...>", remembering the option's name for
 * alloy_error_option (the command shows its flag instead). */
alloy_status alloy_fail_option(alloy_status status, const char *option, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The option the last error was about (NULL: none; any later alloy_fail clears it). */
const char *alloy_error_option(void);

ALLOY_END_DECLS
#endif /* ALLOY_OPTIONS_H */
