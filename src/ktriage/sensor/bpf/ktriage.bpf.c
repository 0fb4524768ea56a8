// SPDX-License-Identifier: GPL-2.0
/* ktriage kernel sensor. Record layouts come from kt_records.h, generated from
 * sensor/layouts.py; each family's programs live in its own header. */
#include "common.h"
#include "origin.h"
#include "proc.bpf.h"
#include "access.bpf.h"
#include "file.bpf.h"
#include "net.bpf.h"
#include "memory.bpf.h"
#include "module.bpf.h"
#include "privilege.bpf.h"

char LICENSE[] SEC("license") = "GPL";
