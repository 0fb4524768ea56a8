"""Windows events → the event model: the mappings are data.

Keyed by (log, EventID); each names the family, constant fields, and which
EventData field fills which event field. Field names are matched without
regard to case (Sysmon 8 says SourceProcessGuid, Sysmon 10 SourceProcessGUID),
and ``-`` or empty values become missing — normalized once, here.

Deliberately ignored: Sysmon 2 (file time change), 4 (service state), 9 (raw
disk read), 15 (stream hash), 16 (config change), 17/18 (pipes), 19-21 (WMI),
22 (DNS), 24 (clipboard), 27-29 (file blocks) — no rule reads them yet; they are
counted as "unmapped" per ingest, not lost silently.
"""

from __future__ import annotations

from typing import Any

Mapping = tuple[str, dict[str, Any], dict[str, str]]  # family, constants, field <- EventData name

SYSMON = "sysmon"
SECURITY = "security"
POWERSHELL = "powershell"
SYSTEM = "system"
LOGS = {"microsoft-windows-sysmon/operational": SYSMON, "security": SECURITY,
        "microsoft-windows-powershell/operational": POWERSHELL, "system": SYSTEM}

_PROC = {"pid": "ProcessId", "image": "Image"}

MAPPINGS: dict[tuple[str, int], Mapping] = {
    (SYSMON, 1): ("process", {"action": "exec"}, {
        "pid": "ProcessId", "ppid": "ParentProcessId", "image": "Image", "path": "Image",
        "cmdline": "CommandLine", "cwd": "CurrentDirectory", "parent_image": "ParentImage", "account": "User",
        "guid": "ProcessGuid"}),
    (SYSMON, 5): ("process", {"action": "exit"}, {**_PROC, "guid": "ProcessGuid"}),
    (SYSMON, 25): ("process", {"action": "tamper"}, {**_PROC, "path": "Image", "tamper_type": "Type"}),
    (SYSMON, 3): ("network", {"op": "connect"}, {
        **_PROC, "proto": "Protocol", "laddr": "SourceIp", "lport": "SourcePort", "raddr": "DestinationIp",
        "rport": "DestinationPort", "direction": "Initiated", "account": "User"}),
    (SYSMON, 6): ("module", {"op": "driver_load"}, {
        "path": "ImageLoaded", "signed": "Signed", "signature": "Signature", "signature_status": "SignatureStatus"}),
    (SYSMON, 7): ("image", {"how": "load"}, {
        **_PROC, "path": "ImageLoaded", "signed": "Signed", "signature": "Signature"}),
    (SYSMON, 8): ("thread", {"action": "remote_create"}, {
        "pid": "SourceProcessId", "image": "SourceImage", "target_pid": "TargetProcessId",
        "target_image": "TargetImage", "new_tid": "NewThreadId", "start_address": "StartAddress",
        "start_module": "StartModule", "start_function": "StartFunction"}),
    (SYSMON, 10): ("access", {"op": "open_process"}, {
        "pid": "SourceProcessId", "tid": "SourceThreadId", "image": "SourceImage",
        "target_pid": "TargetProcessId", "target_image": "TargetImage", "rights_mask": "GrantedAccess",
        "call_trace": "CallTrace"}),
    (SYSMON, 11): ("file", {"op": "create"}, {**_PROC, "path": "TargetFilename"}),
    (SYSMON, 23): ("file", {"op": "delete"}, {**_PROC, "path": "TargetFilename"}),
    (SYSMON, 26): ("file", {"op": "delete"}, {**_PROC, "path": "TargetFilename"}),
    (SYSMON, 12): ("registry", {}, {**_PROC, "op": "EventType", "key": "TargetObject"}),
    (SYSMON, 13): ("registry", {}, {**_PROC, "op": "EventType", "key": "TargetObject", "value": "Details"}),
    (SYSMON, 14): ("registry", {}, {**_PROC, "op": "EventType", "key": "TargetObject", "new_name": "NewName"}),
    (SECURITY, 4688): ("process", {"action": "exec"}, {
        "pid": "NewProcessId", "ppid": "ProcessId", "image": "NewProcessName", "path": "NewProcessName",
        "cmdline": "CommandLine", "parent_image": "ParentProcessName"}),
    (SECURITY, 4689): ("process", {"action": "exit"}, {"pid": "ProcessId", "image": "ProcessName"}),
    (SECURITY, 4656): ("access", {"op": "object_handle"}, {
        "pid": "ProcessId", "image": "ProcessName", "target_image": "ObjectName", "rights_mask": "AccessMask"}),
    (SECURITY, 4663): ("access", {"op": "object_access"}, {
        "pid": "ProcessId", "image": "ProcessName", "target_image": "ObjectName", "rights_mask": "AccessMask"}),
    (SECURITY, 4985): ("file", {"op": "txf_transaction"}, {"pid": "ProcessId", "image": "ProcessName"}),
    (POWERSHELL, 4104): ("api", {"op": "script_block"}, {"args": "ScriptBlockText", "path": "Path"}),
    (SYSTEM, 7045): ("module", {"op": "service_install"}, {
        "name": "ServiceName", "path": "ImagePath", "service_type": "ServiceType", "account": "AccountName"}),
}



def mapped(channel: str, event_id: int | None) -> bool:
    """Whether records of this log and EventID become events."""
    log = LOGS.get(channel.lower())
    return log is not None and (log, event_id) in MAPPINGS


# fields holding numbers: decimal in Sysmon, hex ("0x1a2b") in the Security log
INTEGER_FIELDS = {"pid", "ppid", "tid", "target_pid", "new_tid", "lport", "rport", "rights_mask", "start_address"}
BOOLEAN_FIELDS = {"signed", "direction"}

# Windows process access rights (GrantedAccess), names as the seed prints them
PROCESS_RIGHTS = (
    ("TERMINATE", 0x1), ("CREATE_THREAD", 0x2), ("SET_SESSIONID", 0x4), ("VM_OPERATION", 0x8),
    ("VM_READ", 0x10), ("VM_WRITE", 0x20), ("DUP_HANDLE", 0x40), ("CREATE_PROCESS", 0x80),
    ("SET_QUOTA", 0x100), ("SET_INFORMATION", 0x200), ("QUERY_INFORMATION", 0x400),
    ("SUSPEND_RESUME", 0x800), ("QUERY_LIMITED_INFO", 0x1000), ("SYNCHRONIZE", 0x100000),
)
PROCESS_ALL_ACCESS = 0x1FFFFF


def rights_names(mask: int) -> str:
    if mask == PROCESS_ALL_ACCESS:
        return "PROCESS_ALL_ACCESS"
    return "|".join(name for name, bit in PROCESS_RIGHTS if mask & bit == bit) or "<none>"
