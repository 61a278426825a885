/*
 * test_options.c — option schemas (alloy/options.h): a save/load round trip of every type, the
 * errors of bad saved states and bad flag values (one line naming the option or field), what a
 * resume may change, and the real schemas of the training verbs (every row of a defaults struct
 * survives a round trip; names are unique; every run option is in them).
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <cJSON.h>

typedef struct demo {
    char path[16];
    int n;
    int64_t big;
    uint64_t seed;
    float f;
    double d;
    bool on;
    int mode;
    int quietish;
} demo;

static const char *const modes[] = {"alpha", "beta", "gamma", NULL};
static const alloy_option rows[] = {
    ALLOY_OPT_ROW(demo, path, ALLOY_OPT_STRING, 0, "a path"),
    ALLOY_OPT_ROW(demo, n, ALLOY_OPT_INT, ALLOY_OPT_RESUME, "a count"),
    ALLOY_OPT_ROW(demo, big, ALLOY_OPT_INT64, 0, NULL),
    ALLOY_OPT_ROW(demo, seed, ALLOY_OPT_UINT64, 0, NULL),
    ALLOY_OPT_ROW(demo, f, ALLOY_OPT_FLOAT, 0, NULL),
    ALLOY_OPT_NAMED(demo, d, "the_double", "dbl", ALLOY_OPT_DOUBLE, ALLOY_OPT_OPTIONAL, NULL, NULL),
    ALLOY_OPT_ROW(demo, on, ALLOY_OPT_BOOL, ALLOY_OPT_VALUED, NULL),
    ALLOY_OPT_NAMED(demo, mode, "mode", NULL, ALLOY_OPT_ENUM, 0, modes, NULL),
    ALLOY_OPT_ROW(demo, quietish, ALLOY_OPT_INT, ALLOY_OPT_NOSAVE, NULL),
};
static const alloy_schema schema = {rows, (int)(sizeof rows / sizeof rows[0])};

static void test_round_trip(void) {
    demo a = {"run/x", -7, 1LL << 52, 0xfedcba9876543210ULL, 0.1f, 1.0 / 3.0, true, 2, 5}, b;
    memset(&b, 0, sizeof b);
    cJSON *j = alloy_options_save(&schema, &a);
    REQUIRE(j, "save");
    EXPECT(!cJSON_GetObjectItemCaseSensitive(j, "quietish"), "a NOSAVE option is not saved");
    EXPECT(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "seed")), "a u64 is saved as a string");
    EXPECT(alloy_options_load(&schema, &b, j, "state.json") == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(!strcmp(b.path, a.path) && b.n == a.n && b.big == a.big && b.seed == a.seed && b.f == a.f && b.d == a.d &&
               b.on && b.mode == 2 && b.quietish == 0,
           "every saved field comes back exactly");
    cJSON_DeleteItemFromObject(j, "the_double");
    b.d = 9.0;
    EXPECT(alloy_options_load(&schema, &b, j, "state.json") == ALLOY_STATUS_OK && b.d == 9.0,
           "an OPTIONAL field may be absent (the default stays)");
    cJSON_DeleteItemFromObject(j, "n");
    EXPECT(alloy_options_load(&schema, &b, j, "state.json") == ALLOY_STATUS_FORMAT && says("state.json: missing field \"n\""),
           "%s", alloy_last_error());
    cJSON_AddNumberToObject(j, "n", 1.5);
    EXPECT(alloy_options_load(&schema, &b, j, "s") == ALLOY_STATUS_FORMAT && says("\"n\" is not a valid integer"), "%s",
           alloy_last_error());
    cJSON_ReplaceItemInObject(j, "n", cJSON_CreateNumber(3));
    cJSON_ReplaceItemInObject(j, "mode", cJSON_CreateString("delta"));
    EXPECT(alloy_options_load(&schema, &b, j, "s") == ALLOY_STATUS_FORMAT && says("\"delta\", not alpha, beta or gamma"), "%s",
           alloy_last_error());
    cJSON_ReplaceItemInObject(j, "mode", cJSON_CreateString("beta"));
    cJSON_ReplaceItemInObject(j, "path", cJSON_CreateString("a path far too long for sixteen bytes"));
    EXPECT(alloy_options_load(&schema, &b, j, "s") == ALLOY_STATUS_FORMAT && says("\"path\" is too long"), "%s",
           alloy_last_error());
    cJSON_Delete(j);
}

static void test_set(void) {
    demo a;
    memset(&a, 0, sizeof a);
    EXPECT(alloy_options_set(&schema, &a, "n", "12") == ALLOY_STATUS_OK && a.n == 12, "an int");
    EXPECT(alloy_options_set(&schema, &a, "dbl", "2.5") == ALLOY_STATUS_OK && a.d == 2.5, "by its flag");
    EXPECT(alloy_options_set(&schema, &a, "the-double", "0.5") == ALLOY_STATUS_OK && a.d == 0.5, "'-' as '_'");
    EXPECT(alloy_options_set(&schema, &a, "on", "off") == ALLOY_STATUS_OK && !a.on, "on/off");
    EXPECT(alloy_options_set(&schema, &a, "n", "fast") == ALLOY_STATUS_USAGE && !strcmp(alloy_last_error(), "n expects an integer, got 'fast'") &&
               alloy_error_option() && !strcmp(alloy_error_option(), "n"),
           "the error names the option: %s", alloy_last_error());
    EXPECT(alloy_options_set(&schema, &a, "seed", "-1") == ALLOY_STATUS_USAGE && says("non-negative"), "%s", alloy_last_error());
    EXPECT(alloy_options_set(&schema, &a, "f", "1e999") == ALLOY_STATUS_USAGE && says("expects a number"), "%s", alloy_last_error());
    EXPECT(alloy_options_set(&schema, &a, "mode", "x") == ALLOY_STATUS_USAGE && says("mode must be alpha, beta or gamma, not \"x\""),
           "%s", alloy_last_error());
    EXPECT(alloy_options_set(&schema, &a, "nope", "1") == ALLOY_STATUS_USAGE && alloy_error_option() == NULL,
           "an unknown option: %s", alloy_last_error());
}

static void test_resume(void) {
    demo saved = {"a", 1, 2, 3, 4, 5, false, 0, 0}, given = {"b", 10, 20, 30, 40, 50, true, 1, 7};
    bool set[9] = {false};
    set[1] = true, set[8] = true; // n (RESUME) and quietish (NOSAVE)
    EXPECT(alloy_options_resume(&schema, &saved, &given, set) == ALLOY_STATUS_OK && saved.n == 10 && saved.quietish == 7 &&
               !strcmp(saved.path, "a") && saved.big == 2,
           "what may change does, nothing else");
    set[4] = true; // f
    EXPECT(alloy_options_resume(&schema, &saved, &given, set) == ALLOY_STATUS_USAGE &&
               !strcmp(alloy_last_error(), "f cannot change when resuming (the run's saved settings apply)"),
           "%s", alloy_last_error());
}

/* Each verb's schema: unique names and flags, and a defaults struct survives a round trip. */
static void check_schema(const char *what, const alloy_schema *s, const void *defaults, void *copy, size_t size) {
    for (int i = 0; i < s->n; i++)
        for (int k = i + 1; k < s->n; k++) {
            char a[64], b[64];
            EXPECT(strcmp(s->rows[i].name, s->rows[k].name) != 0, "%s: %s twice", what, s->rows[i].name);
            EXPECT(strcmp(alloy_option_flag(&s->rows[i], a, 64), alloy_option_flag(&s->rows[k], b, 64)) != 0, "%s: flag %s twice",
                   what, a);
        }
    cJSON *j = alloy_options_save(s, defaults);
    memset(copy, 0, size);
    EXPECT(j && alloy_options_load(s, copy, j, what) == ALLOY_STATUS_OK, "%s: %s", what, alloy_last_error());
    for (int i = 0; i < s->n; i++) {
        const alloy_option *o = &s->rows[i];
        if (o->flags & ALLOY_OPT_NOSAVE) continue;
        EXPECT(!memcmp((const char *)defaults + o->offset, (char *)copy + o->offset, o->size), "%s: %s does not round-trip", what,
               o->name);
    }
    cJSON_Delete(j);
}

static void test_verb_schemas(void) {
    alloy_train_options t = alloy_train_defaults(), t2;
    check_schema("train", alloy_train_schema(), &t, &t2, sizeof t2);
    alloy_align_options a = alloy_align_defaults(ALLOY_ALIGN_DPO), a2;
    check_schema("align", alloy_align_schema(), &a, &a2, sizeof a2);
    alloy_ppo_options p = alloy_ppo_defaults(), p2;
    check_schema("ppo", alloy_ppo_schema(), &p, &p2, sizeof p2);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_set);
    RUN(test_resume);
    RUN(test_verb_schemas);
    return harness_exit();
}
