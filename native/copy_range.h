/* copy_file_range between host files: see copy_range.c. */
#ifndef VDISK_COPY_RANGE_H
#define VDISK_COPY_RANGE_H
#include <stdint.h>
#include <node_api.h>

/* Adds copyRangeAsync to the addon's exports. */
void copy_range_register(napi_env env, napi_value exports);
/* Adds copyRuns and copyRunsPacked (copy_engine.c) to the addon's exports. */
void copy_engine_register(napi_env env, napi_value exports);

/* From vdisk_native.c: an errno's name, and a thrown Error carrying it as its code. */
const char *errno_name(int err);
napi_value throw_errno(napi_env env, const char *what, int err);
/* Reads argument i as a non-negative safe integer; throws and returns 0 otherwise. */
int get_int(napi_env env, napi_value *argv, size_t argc, size_t i, const char *name, int64_t *out);
/* A JS number holding v (exact up to 2^53). */
napi_value make_number(napi_env env, int64_t v);
/* Reads argument i as a Uint8Array (its bytes and length); throws and returns 0 otherwise. */
int get_bytes(napi_env env, napi_value *argv, size_t argc, size_t i, const char *name, void **data, size_t *length);

#endif
