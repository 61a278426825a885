/*
 * alloy/alloy.h — everything in liballoy.
 *
 *     #include <alloy/alloy.h>     // cc prog.c $(pkg-config --cflags --libs alloy)
 */
#ifndef ALLOY_ALLOY_H
#define ALLOY_ALLOY_H

#include "alloy/base.h"
#include "alloy/options.h"
#include "alloy/records.h"
#include "alloy/kernels.h"
#include "alloy/model.h"
#include "alloy/tokenizer.h"
#include "alloy/chat.h"
#include "alloy/dedup.h"
#include "alloy/data.h"
#include "alloy/io.h"
#include "alloy/checkpoint.h"
#include "alloy/llmc.h"
#include "alloy/quant.h"
#include "alloy/gguf.h"
#include "alloy/eval.h"
#include "alloy/train.h"
#include "alloy/align.h"
#include "alloy/fuse.h"
#include "alloy/grow.h"
#include "alloy/moe.h"
#include "alloy/ensemble.h"
#include "alloy/distill.h"
#include "alloy/infer.h"

#endif /* ALLOY_ALLOY_H */
