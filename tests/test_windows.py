"""Windows telemetry through the same engine, over the labelled public samples
in ../shared/data/windows (see its MANIFEST): every technique file yields its
detection class, benign baselines stay below severity 5, corrupt files ingest
what is readable and report the rest, and nothing is ingested twice."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ktriage
from ktriage.sources.windows.logs import RecordError, evtx_records, normalize, records

DATA = Path(os.environ.get("KTRIAGE_WINDOWS_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"))
ATTACKS = DATA / "EVTX-ATTACK-SAMPLES"
if not DATA.is_dir():
    if os.environ.get("CI"):  # CI has shared/ beside the clone: missing data there is a failure, not a skip
        raise RuntimeError(f"the Windows samples are not at {DATA}")
    pytest.skip(f"the Windows samples are not at {DATA}", allow_module_level=True)

EXPECTED = {
    "Defense Evasion/meterpreter_migrate_to_explorer_sysmon_8.evtx": {
        "REMOTE_THREAD_START_IN_NON_IMAGE_EXECUTABLE_REGION"},
    "Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx": {
        "REMOTE_THREAD_START_IN_NON_IMAGE_EXECUTABLE_REGION", "REMOTE_THREAD_OUTSIDE_MAIN_IMAGE"},
    "Execution/Sysmon_meterpreter_ReflectivePEInjection_to_notepad_.evtx": {"MANUAL_MAP_INJECTION"},
    "Credential Access/CA_sysmon_hashdump_cmd_meterpreter.evtx": {
        "LSASS_MEMORY_ACCESS", "MANUAL_MAP_INJECTION"},
    "Credential Access/CA_keefarce_keepass_credump.evtx": {"REMOTE_THREAD_OUTSIDE_MAIN_IMAGE"},
    "Credential Access/CA_keepass_KeeThief_Get-KeePassDatabaseKey.evtx": {
        "REMOTE_THREAD_START_IN_NON_IMAGE_EXECUTABLE_REGION"},
    "Credential Access/sysmon_rdrleakdiag_lsass_dump.evtx": {"REMOTE_THREAD_OUTSIDE_MAIN_IMAGE"},
    "Privilege Escalation/privesc_rotten_potato_from_webshell_metasploit_sysmon_1_8_3.evtx": {
        "PROCESS_HOLLOWING_MARK_CHAIN_STRONG"},
    "AutomatedTestingTools/Malware/rundll32_hollowing_wermgr_masquerading.evtx": {
        "STACK_INTEGRITY_ANOMALY_ON_HANDLE_OP", "PROCESS_HOLLOWING_EMPTY_HOST_CHAIN"},
    "Defense Evasion/DE_ProcessHerpaderping_Sysmon_11_10_1_7.evtx": {"PROCESS_HERPADERPING_OR_GHOSTING_SUSPECT"},
    "Defense Evasion/Win_4985_T1186_Process_Doppelganging.evtx": {"PROCESS_HOLLOWING_TXF_SUSPECT_CHAIN"},
    "Defense Evasion/Sysmon_10_Evasion_Suspicious_NtOpenProcess_CallTrace.evtx": {
        "DIRECT_SYSCALL_SUSPECT_HANDLE_OPERATION", "STACK_INTEGRITY_ANOMALY_ON_HANDLE_OP"},
    "Credential Access/sysmon_10_11_outlfank_dumpert_and_andrewspecial_memdump.evtx": {
        "DIRECT_SYSCALL_SUSPECT_HANDLE_OPERATION", "LSASS_MEMORY_ACCESS"},
    "Defense Evasion/evasion_codeinj_odzhan_conhost_sysmon_10_1.evtx": {"STACK_INTEGRITY_ANOMALY_ON_HANDLE_OP"},
    "Defense Evasion/sysmon_10_1_ppid_spoofing.evtx": {"STACK_INTEGRITY_ANOMALY_ON_HANDLE_OP"},
    "Credential Access/sysmon_10_lsass_mimikatz_sekurlsa_logonpasswords.evtx": {"LSASS_MEMORY_ACCESS"},
    "Credential Access/ppl_bypass_ppldump_knowdll_hijack_sysmon_security.evtx": {"LSASS_MEMORY_ACCESS"},
    "Credential Access/CA_hashdump_4663_4656_lsass_access.evtx": {"LSASS_MEMORY_ACCESS"},
    "Defense Evasion/DSE_bypass_BYOV_TDL_dummydriver_sysmon_6_7_13.evtx": {
        "KERNEL_DRIVER_LOAD", "HIGH_VALUE_REGISTRY_ACTIVITY"},
    "Discovery/discovery_UEFI_Settings_rweverything_sysmon_6.evtx": {"KERNEL_DRIVER_LOAD"},
    "Persistence/evasion_persis_hidden_run_keyvalue_sysmon_13.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Persistence/persistence_SilentProcessExit_ImageHijack_sysmon_13_1.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Persistence/sysmon_13_1_persistence_via_winlogon_shell.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Persistence/persist_turla_outlook_backdoor_comhijack.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Credential Access/Powershell_4104_MiniDumpWriteDump_Lsass.evtx": {"CREDENTIAL_DUMP_SCRIPT_BLOCK"},
    "Credential Access/sysmon_10_1_memdump_comsvcs_minidump.evtx": {"CREDENTIAL_DUMP_COMMAND_LINE"},
    "Privilege Escalation/Sysmon_13_1_UAC_Bypass_EventVwrBypass.evtx": {"HIGH_VALUE_REGISTRY_ACTIVITY"},
    "Persistence/persist_firefox_comhijack_sysmon_11_13_7_1.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Persistence/persistence_startup_UserShellStartup_Folder_Changed_sysmon_13.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "AutomatedTestingTools/Malware/sideloading_injection_persistence_run_key.evtx": {"REGISTRY_AUTORUN_PERSISTENCE"},
    "Defense Evasion/apt10_jjs_sideloading_prochollowing_persist_as_service_sysmon_1_7_8_13.evtx": {
        "REMOTE_THREAD_START_IN_NON_IMAGE_EXECUTABLE_REGION", "REMOTE_THREAD_OUTSIDE_MAIN_IMAGE",
        "PROCESS_HOLLOWING_MARK_CHAIN_STRONG", "SERVICE_INSTALL_OUTSIDE_SYSTEM_PATHS"},
    "Credential Access/sysmon_2x10_lsass_with_different_pid_RtlCreateProcessReflection.evtx": {"LSASS_MEMORY_ACCESS"},
}
BENIGN = ["python-evtx/tests/data/issue_43.evtx", "python-evtx/tests/data/security.evtx",
          "python-evtx/tests/data/system.evtx", "evtx-rs/samples/sysmon.evtx", "evtx-rs/samples/system.evtx"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("win") / "win.db"
    out = ktriage("ingest", str(DATA), "--db", str(db))
    assert out.returncode == 6, out.stderr  # the corpus holds three damaged samples: incomplete, all else stored
    return db, out.stderr


def _names(db: Path, relative: str, min_severity: int = 1) -> set[str]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT d.name FROM detection d JOIN ingested i ON d.source = 'detect/' || i.source "
                       "WHERE i.path = ? AND d.severity >= ?", (str(DATA / relative), min_severity)).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_labelled_technique_gives_its_detection_class(ingested, relative: str) -> None:
    db, _ = ingested
    assert EXPECTED[relative] <= _names(db, f"EVTX-ATTACK-SAMPLES/{relative}")


@pytest.mark.parametrize("relative", BENIGN)
def test_benign_baseline_has_no_severity_5_detection(ingested, relative: str) -> None:
    db, _ = ingested
    con = sqlite3.connect(db)
    read = con.execute("SELECT events + unmapped FROM ingested WHERE path = ?", (str(DATA / relative),)).fetchone()[0]
    assert read > 300, "the baseline was read"
    assert _names(db, relative, min_severity=5) == set()


def test_corrupt_files_ingest_what_is_readable_and_report_the_rest(ingested) -> None:
    db, stderr = ingested
    con = sqlite3.connect(db)
    sysmon = str(DATA / "evtx-rs/samples/sysmon.evtx")
    events, errors = con.execute("SELECT events, errors FROM ingested WHERE path = ?", (sysmon,)).fetchone()
    assert events == 355 and errors == 8  # the MANIFEST: 358 records, 8 unparsable (some chunks hold several)
    assert f"{sysmon} chunk 9 (offset 0x91000): " in stderr and "Invalid EVTX chunk header magic" in stderr
    bad = str(DATA / "evtx-rs/samples/sample_with_a_bad_chunk_magic.evtx")
    unmapped, errors = con.execute("SELECT unmapped, errors FROM ingested WHERE path = ?", (bad,)).fetchone()
    # the two bad chunks the parser reports; three chunks it stopped reading early without a word
    # (their record data fails its checksum); ten all-zero chunks the file header says are in use
    # (it wrapped: chunks 3..15 and 0..2); two ranges of record ids no readable chunk holds
    assert unmapped == 270 and errors == 17, "the readable chunks were read; the bad ones and the shortfall reported"
    assert f"{bad} chunk 0 (offset 0x1000): 14 of the 130 records it holds (ids 46728-46857) read" in stderr
    holes = [e.message for e in records(Path(bad)) if isinstance(e, RecordError) and e.where == bad]
    assert holes == ["records 45950-46727 are in no readable chunk (they fall between chunk 9 and chunk 0)",
                     "records 46858-47627 are in no readable chunk (they fall between chunk 0 and chunk 7)"]


def test_reingest_does_not_duplicate(ingested, tmp_path) -> None:
    db, _ = ingested
    con = sqlite3.connect(db)
    before = con.execute("SELECT count(*) FROM access").fetchone()[0]
    again = ktriage("ingest", str(ATTACKS / "Credential Access"), "--db", str(db))
    assert again.returncode == 0 and "already ingested, skipped" in again.stderr
    assert con.execute("SELECT count(*) FROM access").fetchone()[0] == before


def test_peeking_past_unmapped_records_changes_no_event() -> None:
    """Unmapped records are recognised without decoding them: the same events, the same count."""
    files = sorted(DATA.rglob("*.evtx"))
    assert files

    def events(peek: bool) -> tuple[list, int]:
        out, unmapped = [], 0
        for path in files:
            for rec in evtx_records(path, peek=peek):
                if not isinstance(rec, tuple):  # an unreadable record: the same either way
                    continue
                ev = normalize(rec[1], rec[2], "s", rec[0])
                if ev is None:
                    unmapped += 1
                else:
                    out.append(ev)
        return out, unmapped

    (peeked, skipped), (decoded, unmapped) = events(True), events(False)
    assert peeked == decoded and skipped == unmapped
    assert 0 < len(peeked) < unmapped


def test_field_names_normalized_at_the_edge() -> None:
    sysmon8 = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 8, "SystemTime": "2019-05-18T17:16:08Z",
               "Computer": "H"}
    data = {"SourceProcessGuid": "{x}", "SourceProcessId": "2108", "TargetProcessId": 2840, "StartModule": "-",
            "StartAddress": "0x0000000000590000"}
    ev = normalize(sysmon8, data, "s", 1)
    assert (ev["pid"], ev["target_pid"], ev["start_module"], ev["start_address"]) == (2108, 2840, None, 0x590000)
    sysmon10 = dict(sysmon8, EventID=10, Channel="microsoft-windows-sysmon/operational")
    ev = normalize(sysmon10, {"SOURCEPROCESSID": 5, "GrantedAccess": "0x1010", "CallTrace":
                              "C:\\x\\evil.exe+10|UNKNOWN(00A1)", "SourceImage": "C:\\x\\evil.exe"}, "s", 2)
    assert ev["rights"] == "VM_READ|QUERY_LIMITED_INFO" and ev["origin_class"] == "exe"
    assert json.loads(ev["stack"]) == [[None, "evil.exe+0x10"], [0xA1, "[unknown]"]]
    sec = normalize({"Channel": "Security", "EventID": 4688, "SystemTime": "2020-01-01 00:00:00.5"},
                    {"NewProcessId": "0x1a2b", "ProcessId": "0x4"}, "s", 3)
    assert (sec["pid"], sec["ppid"], sec["ts"] % 10**9) == (0x1A2B, 4, 500_000_000)


def _sysmon_as_json_shapes(tmp_path: Path) -> list[Path]:
    """The same records as OTRF (flat), Winlogbeat and zip/tar.gz archives."""
    src = ATTACKS / "Defense Evasion/meterpreter_migrate_to_explorer_sysmon_8.evtx"
    recs = [r for r in records(src) if isinstance(r, tuple)]
    flat = [dict(r[2], EventID=r[1]["EventID"], Channel=r[1]["Channel"], Computer=r[1]["Computer"],
                 **{"@timestamp": r[1]["SystemTime"]}) for r in recs]
    beat = [{"@timestamp": r[1]["SystemTime"], "winlog": {"event_id": r[1]["EventID"], "channel": r[1]["Channel"],
                                                            "computer_name": r[1]["Computer"], "event_data": r[2]}}
            for r in recs]
    otrf, winlogbeat = tmp_path / "otrf.json", tmp_path / "beat.json"
    otrf.write_text("\n".join(json.dumps(x) for x in flat) + "\n")
    winlogbeat.write_text("\n".join(json.dumps(x) for x in beat) + "\n")
    with zipfile.ZipFile(tmp_path / "otrf.zip", "w") as z:
        z.write(otrf, "dataset/otrf.json")
    with tarfile.open(tmp_path / "beat.tar.gz", "w:gz") as t:
        t.add(winlogbeat, "dataset/beat.json")
    return [otrf, winlogbeat, tmp_path / "otrf.zip", tmp_path / "beat.tar.gz"]


def test_json_shapes_and_archives_give_the_same_detection(tmp_path) -> None:
    for path in _sysmon_as_json_shapes(tmp_path):
        db = tmp_path / f"{path.name}.db"
        assert ktriage("ingest", str(path), "--db", str(db)).returncode == 0
        names = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM detection")}
        assert names == {"REMOTE_THREAD_START_IN_NON_IMAGE_EXECUTABLE_REGION", "REMOTE_THREAD_OUTSIDE_MAIN_IMAGE"}, path.name


def test_missing_input_is_one_clear_line(tmp_path) -> None:
    out = ktriage("ingest", str(tmp_path / "nope.evtx"), "--db", str(tmp_path / "x.db"))
    assert out.returncode != 0
    assert out.stderr.strip() == f"ktriage: error: {tmp_path / 'nope.evtx'}: no such file or directory"


# Real benign patterns of the dev data that used to fire (issue 14): rights Windows grants are not intent.
NO_LONGER = {
    "EVTX-ATTACK-SAMPLES/Persistence/persist_firefox_comhijack_sysmon_11_13_7_1.evtx": "PROCESS_HOLLOWING_",
    "EVTX-ATTACK-SAMPLES/Privilege Escalation/Sysmon_13_1_UAC_Bypass_EventVwrBypass.evtx": "PROCESS_HOLLOWING_",
    "EVTX-ATTACK-SAMPLES/Defense Evasion/evasion_codeinj_odzhan_spoolsv_sysmon_10_1.evtx": "PROCESS_HOLLOWING_",
    "DeepBlueCLI/evtx/metasploit-sysmon.evtx": "PROCESS_HOLLOWING_",
    "EVTX-ATTACK-SAMPLES/Defense Evasion/sysmon_10_1_ppid_spoofing.evtx": "THREAD_HIJACK_INTENT",
}


@pytest.mark.parametrize("relative", sorted(NO_LONGER))
def test_the_handle_windows_grants_at_creation_is_not_intent(ingested, relative: str) -> None:
    db, _ = ingested
    assert [n for n in _names(db, relative) if n.startswith(NO_LONGER[relative])] == []


SCORER = DATA.parents[1] / "tools" / "windows-score" / "score.py"


@pytest.mark.skipif(not SCORER.exists(), reason=f"the scorer is not at {SCORER}")
def test_the_dev_set_scores_at_least_what_it_scored_at_issue_14(ingested, tmp_path) -> None:
    db, _ = ingested
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text(ktriage("detections", "--db", str(db), "--format", "jsonl").stdout)

    def score(*options: str) -> tuple[int, int]:
        last = subprocess.run([sys.executable, str(SCORER), str(jsonl), *options], capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]  # recall=X/Y fp=Z
        recall, fp = last.split()
        return int(recall.split("=")[1].split("/")[0]), int(fp.split("=")[1])

    recall, fp = score()
    assert recall >= 79 and fp <= 1, (recall, fp)  # filed at 72/79, fp 18; the issue asked 76 and 3
    assert score("--min-severity", "5")[0] >= 77  # filed at 44/79; asked 70


def test_frames_the_dotnet_jit_compiled_are_not_unbacked_code(ingested) -> None:
    db, _ = ingested
    con = sqlite3.connect(db)

    def anomalies(relative: str, actor: str) -> list:
        return [r[0] for r in con.execute(
            "SELECT a.stack_anomaly FROM access a JOIN ingested i ON a.source = i.source WHERE i.path = ? "
            "AND a.image LIKE ? AND a.stack LIKE '%[unknown]%'", (str(DATA / relative), f"%{actor}"))]

    jit = anomalies("EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx",
                    "powershell.exe")
    assert jit == [None], "UNKNOWN frames below System.ni.dll are PowerShell's JIT-compiled code"
    shellcode = anomalies("EVTX-ATTACK-SAMPLES/AutomatedTestingTools/Malware/"
                          "DE_timestomp_and_dll_sideloading_and_RunPersist.evtx", "NvSmart.exe")
    assert any(shellcode), "UNKNOWN frames with no .NET frame above them are unbacked code"


def test_an_actor_gets_the_parent_of_its_own_start_and_a_reused_pid_does_not() -> None:
    from ktriage.sources.windows.lineage import fill_parents

    events = [{"family": "process", "action": "exec", "pid": 7188, "ppid": 6316, "path": "C:\\Windows\\services.exe",
               "parent_image": "C:\\Users\\x\\PPLdump.exe"},
              {"family": "access", "pid": 7188, "target_pid": 624},
              {"family": "process", "action": "exit", "pid": 7188},
              {"family": "access", "pid": 7188, "target_pid": 624},  # the pid reused by a process not seen starting
              {"family": "registry", "pid": 1, "parent_image": "C:\\Windows\\explorer.exe"}]
    assert fill_parents(events) == 1
    assert (events[1]["parent_image"], events[1]["ppid"]) == ("C:\\Users\\x\\PPLdump.exe", 6316)
    assert "parent_image" not in events[3] and events[4]["parent_image"] == "C:\\Windows\\explorer.exe"
