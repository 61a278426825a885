/*
 * internal.h — what the files of src/align/ share and nothing outside uses.
 */
#ifndef ALLOY_ALIGN_LAYER_INTERNAL_H
#define ALLOY_ALIGN_LAYER_INTERNAL_H

#include "alloy/align.h"

/* ppo_options.c, for ppo_run.c: USAGE naming the option that is out of range. */
alloy_status ppo_check_options(const alloy_ppo_options *o);

#endif
