{
  "targets": [
    {
      "target_name": "vdisk_native",
      "sources": ["vdisk_native.c", "host_ring.c", "copy_range.c", "socket_send.c", "copy_engine.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"]
    }
  ]
}
