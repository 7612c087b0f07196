/* Sending page-cache ranges of a file to a socket: see socket_send.c. */
#ifndef VDISK_SOCKET_SEND_H
#define VDISK_SOCKET_SEND_H
#include <node_api.h>

/* Adds sendFileNoWait and enlargeUnixSendBuffer to the addon's exports. */
void socket_send_register(napi_env env, napi_value exports);

#endif
