/* io_uring for O_DIRECT host files: see host_ring.c. */
#ifndef VDISK_HOST_RING_H
#define VDISK_HOST_RING_H
#include <node_api.h>

/* Adds ringOpen / ringSubmit / ringClose to the addon's exports (nothing without io_uring). */
void host_ring_register(napi_env env, napi_value exports);

#endif
