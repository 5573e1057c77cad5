"""Rank tables: every source, the merge, the validation errors, the reader and the CLI."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vig.cluster import (
    PLACEHOLDER_DEVICE_IP,
    RankTableError,
    ServerSpec,
    build_rank_table,
    device_of_rank,
    expand_nodelist,
    load_rank_table,
    local_ranks,
    parse_hccn_conf,
    parse_hccn_tool_output,
    planned_topology,
    rank_table_from_config,
    run_command,
    server_of_rank,
    validate_rank_table,
    world_size,
    write_rank_table,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "rank_table"
CLI = ROOT / "workflow_scripts" / "rank_table.py"


def _cli_module():
    spec = importlib.util.spec_from_file_location("rank_table_cli", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fixture_runner(calls):
    """Stands in for hccn_tool: answers from tests/data/rank_table/hccn_tool/ip_<id>.txt."""
    def run(argv):
        calls.append(list(argv))
        device_id = argv[argv.index("-i") + 1]
        path = DATA / "hccn_tool" / f"ip_{device_id}.txt"
        if not path.exists():
            raise RankTableError(" ".join(argv), "exit code 255: no such device")
        return path.read_text()
    return run


def _rows(table):
    return [(s["server_id"], d["device_id"], d["device_ip"], d["rank_id"])
            for s in table["server_list"] for d in s["device"]]


def _all_scalars(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _all_scalars(v)]
    if isinstance(value, list):
        return [x for v in value for x in _all_scalars(v)]
    return [value]


# ----------------------------------------------------------------------------- sources


def test_explicit_servers_merge_with_global_ranks_in_server_order():
    servers = json.loads((DATA / "servers_2x8.json").read_text())
    table = rank_table_from_config({"source": "servers", "servers": servers})
    assert set(table) == {"version", "server_count", "server_list", "status"}
    assert (table["version"], table["server_count"], table["status"]) == ("1.0", "2", "completed")
    assert all(isinstance(v, str) for v in _all_scalars(table))
    rows = _rows(table)
    assert [r[3] for r in rows] == [str(i) for i in range(16)]
    assert rows[8] == ("10.0.0.2", "0", servers[1]["devices"][0]["device_ip"], "8")
    assert [s["host_nic_ip"] for s in table["server_list"]] == ["reserve", "reserve"]
    # written, the same bytes as the seed's merge_hccl.py of two hccl_tools.py tables for this topology
    # (tests/reference/hccl_rank_tables.py regenerates the fixture from those tools)
    written = write_rank_table(table, "rank_table.json").read_bytes()
    assert written == (DATA / "hccl_2s_16p.json").read_bytes()


def test_compact_device_count_uses_the_placeholder_ip_for_every_device():
    table = rank_table_from_config({"source": "servers", "servers": [
        {"server_id": "gpu-a", "device_count": 2}, {"server_id": "gpu-b", "device_count": 3}]})
    assert _rows(table) == [("gpu-a", "0", "0.0.0.0", "0"), ("gpu-a", "1", "0.0.0.0", "1"),
                            ("gpu-b", "0", "0.0.0.0", "2"), ("gpu-b", "1", "0.0.0.0", "3"),
                            ("gpu-b", "2", "0.0.0.0", "4")]
    assert PLACEHOLDER_DEVICE_IP == "0.0.0.0"


@pytest.mark.parametrize("entry, message", [
    ({"server_id": "a"}, "exactly one of 'devices'"),
    ({"server_id": "a", "device_count": 2, "devices": []}, "exactly one of 'devices'"),
    ({"devices": [{"device_id": 0, "device_ip": "1.1.1.1"}]}, "server_id is missing"),
    ({"server_id": "a", "device_count": 0}, "positive integer"),
    ({"server_id": "a", "devices": [{"device_id": "x", "device_ip": "1.1.1.1"}]}, "device_id must be"),
    ({"server_id": "a", "devices": [{"device_id": 0, "device_ip": "1.1.1"}]}, "IPv4"),
    ({"server_id": "a", "devices": [{"device_id": 0}]}, "expected {device_id, device_ip}"),
    ({"server_id": "a", "device_count": 2, "gpus": 2}, "unknown keys ['gpus']"),
])
def test_bad_server_entries_name_the_entry(entry, message):
    with pytest.raises(RankTableError, match=r"servers\[0\]") as err:
        rank_table_from_config({"source": "servers", "servers": [entry]})
    assert message in str(err.value)


def test_hccn_conf_reads_address_lines_and_ignores_other_keys():
    addresses = parse_hccn_conf(DATA / "hccn_node01.conf")
    assert sorted(addresses) == list(range(8))
    assert addresses[0] == "192.168.100.111" and addresses[5] == "192.168.101.112"
    table = rank_table_from_config({"source": "hccn_conf", "hccn_conf": str(DATA / "hccn_node01.conf"),
                                    "server_id": "10.0.0.1"})
    assert write_rank_table(table, "one.json").read_bytes() == (DATA / "hccl_8p_01234567_10.0.0.1.json").read_bytes()
    subset = rank_table_from_config({"source": "hccn_conf", "hccn_conf": str(DATA / "hccn_node01.conf"),
                                     "server_id": "10.0.0.1", "device_ids": [4, 5, 6, 7]})
    assert [(r[1], r[3]) for r in _rows(subset)] == [("4", "0"), ("5", "1"), ("6", "2"), ("7", "3")]


def test_hccn_conf_malformed_lines_are_all_reported_with_file_and_line():
    with pytest.raises(RankTableError) as err:
        parse_hccn_conf(DATA / "hccn_malformed.conf")
    text = str(err.value)
    assert "hccn_malformed.conf" in text and "3 problems" in text
    assert "line 3: malformed line 'address_1 192.168.101.101'" in text
    assert "line 4: 'address_x' must be address_<device id>" in text
    assert "line 5: device 3: '192.168.103.999' is not an IPv4 address" in text


def test_hccn_conf_duplicate_missing_and_empty(tmp_path):
    with pytest.raises(RankTableError, match=r"line 2: device 0 has a second address 192\.168\.100\.102"):
        parse_hccn_conf(DATA / "hccn_duplicate_device.conf")
    with pytest.raises(RankTableError, match=r"no address for device\(s\) \[9\]"):
        rank_table_from_config({"source": "hccn_conf", "hccn_conf": str(DATA / "hccn_node01.conf"),
                                "server_id": "s", "device_ids": [0, 9]})
    empty = tmp_path / "hccn.conf"
    empty.write_text("# nothing configured\n")
    with pytest.raises(RankTableError, match="no address_<id>=<ip> lines"):
        parse_hccn_conf(empty)
    with pytest.raises(RankTableError, match="cannot read hccn.conf"):
        parse_hccn_conf(tmp_path / "absent.conf")


def test_hccn_tool_queries_every_device_and_parses_the_first_line():
    calls = []
    table = rank_table_from_config({"source": "hccn_tool", "server_id": "10.0.0.1"},
                                   runner=_fixture_runner(calls))
    assert calls == [["hccn_tool", "-i", str(d), "-ip", "-g"] for d in range(8)]
    assert table == load_rank_table(DATA / "hccl_8p_01234567_10.0.0.1.json")
    assert parse_hccn_tool_output("ipaddr: 192.168.1.7\nnetmask:255.255.255.0\n", 3) == "192.168.1.7"


def test_hccn_tool_failure_names_the_device_or_falls_back_to_hccn_conf():
    broken = (DATA / "hccn_tool" / "ip_broken.txt").read_text()
    with pytest.raises(RankTableError, match=r"hccn_tool -i 2 -ip -g: device 2: expected 'ipaddr:<ip>'"):
        parse_hccn_tool_output(broken, 2)
    with pytest.raises(RankTableError, match="hccn_tool -i 9 -ip -g"):
        rank_table_from_config({"source": "hccn_tool", "server_id": "s", "device_ids": [0, 9],
                                "max_device_id": 15}, runner=_fixture_runner([]))
    # device 9 has no hccn_tool answer; a conf that has it fills in, as hccl_tools falls back
    conf = Path("hccn.conf")
    conf.write_text("address_9=192.168.9.9\n")
    table = rank_table_from_config({"source": "hccn_tool", "server_id": "s", "device_ids": [0, 9],
                                    "hccn_conf": str(conf), "max_device_id": 15}, runner=_fixture_runner([]))
    assert [(r[1], r[2]) for r in _rows(table)] == [("0", "192.168.100.111"), ("9", "192.168.9.9")]


def test_default_command_runner_reports_missing_tools_and_failures():
    with pytest.raises(RankTableError, match="hccn_tool_absent_xyz -i 0: could not run"):
        run_command(["hccn_tool_absent_xyz", "-i", "0"])
    with pytest.raises(RankTableError, match="exit code 3: bad device"):
        run_command([sys.executable, "-c", "import sys; sys.stderr.write('bad device'); sys.exit(3)"])
    assert run_command([sys.executable, "-c", "print('ipaddr:10.2.3.4')"]) == "ipaddr:10.2.3.4\n"


# ----------------------------------------------------------------------------- Slurm


@pytest.mark.parametrize("nodelist, hosts", [
    ("node01", ["node01"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu[8-10],cpu1", ["gpu8", "gpu9", "gpu10", "cpu1"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
    (" a1,b[2-3] ", ["a1", "b2", "b3"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist, message", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("node[01-03", "unclosed '['"),
    ("node01]", "unmatched ']'"),
    ("node[[1]]", "nested '['"),
    ("node[3-1]", "runs backwards"),
    ("node[a-b]", "bad range 'a-b'"),
    ("a,,b", "empty entry"),
    ("node[1-2],node2", "more than once"),
])
def test_bad_nodelists_are_rejected(nodelist, message):
    with pytest.raises(RankTableError, match="node list") as err:
        expand_nodelist(nodelist)
    assert message in str(err.value)


def test_slurm_with_device_map_merges_nodes_in_job_order():
    resolved = []

    def resolve(host):
        resolved.append(host)
        return {"node03": "10.0.0.3"}[host]

    table = rank_table_from_config(
        {"source": "slurm", "device_map": str(DATA / "device_map.yaml")},
        environ={"SLURM_JOB_NODELIST": "node[02-03]"}, resolve_host=resolve)
    assert _rows(table) == [("10.0.0.2", "0", "192.168.100.121", "0"), ("10.0.0.2", "1", "192.168.101.121", "1"),
                            ("10.0.0.3", "0", "192.168.100.131", "2"), ("10.0.0.3", "1", "192.168.101.131", "3")]
    assert resolved == ["node03"]  # node02 has its server_id in the map
    assert local_ranks(table, "10.0.0.3") == [2, 3]


def test_slurm_node_missing_from_device_map_is_named():
    with pytest.raises(RankTableError, match=r"device_map.yaml: no entry for node\(s\) \['node04'\]"):
        rank_table_from_config({"source": "slurm", "device_map": str(DATA / "device_map.yaml"),
                                "node_list": "node[01,04]"}, resolve_host=lambda h: "10.9.9.9")


@pytest.mark.parametrize("text, message", [
    ("node01: [unclosed", "not valid JSON/YAML"),
    ("- node01\n- node02\n", "expected a mapping {node name"),
    ("node01: {devices: [{device_id: 0, device_ip: 10.0.0.300}]}\n", "node 'node01' (server 'node01') devices[0]"),
])
def test_bad_device_maps_are_named(text, message):
    Path("map.yaml").write_text(text)
    with pytest.raises(RankTableError, match="map.yaml") as err:
        rank_table_from_config({"source": "slurm", "device_map": "map.yaml", "node_list": "node01",
                                "resolve_hosts": False})
    assert message in str(err.value)


def test_slurm_with_per_node_hccn_conf_builds_16_ranks():
    table = rank_table_from_config(
        {"source": "slurm", "hccn_conf": str(DATA / "hccn_{node}.conf"), "node_list": "node[01-02]"},
        resolve_host={"node01": "10.0.0.1", "node02": "10.0.0.2"}.__getitem__)
    assert table == load_rank_table(DATA / "hccl_2s_16p.json")
    assert world_size(table) == 16 and server_of_rank(table, 9) == "10.0.0.2" and device_of_rank(table, 9) == 1


def test_slurm_same_hccn_conf_for_every_node_is_a_duplicate_ip_error():
    with pytest.raises(RankTableError, match=r"server 'node02' device '0': device_ip 192\.168\.100\.111 "
                                             r"is already used by server 'node01' device '0'"):
        rank_table_from_config({"source": "slurm", "hccn_conf": str(DATA / "hccn_node01.conf"),
                                "node_list": "node[01-02]", "resolve_hosts": False})


def test_slurm_placeholder_devices_and_env_fallbacks():
    table = rank_table_from_config({"source": "slurm", "device_count": 2, "resolve_hosts": False},
                                   environ={"SLURM_NODELIST": "c[1-2]"})
    assert _rows(table) == [("c1", "0", "0.0.0.0", "0"), ("c1", "1", "0.0.0.0", "1"),
                            ("c2", "0", "0.0.0.0", "2"), ("c2", "1", "0.0.0.0", "3")]
    with pytest.raises(RankTableError, match="node list: is empty"):
        rank_table_from_config({"source": "slurm", "device_count": 2}, environ={})
    with pytest.raises(RankTableError, match="say where each node's devices come from"):
        rank_table_from_config({"source": "slurm", "node_list": "c1", "resolve_hosts": False}, environ={})
    with pytest.raises(RankTableError, match="not both"):
        rank_table_from_config({"source": "slurm", "node_list": "c1", "device_count": 2, "device_ids": [0]})


# ----------------------------------------------------------------------------- validation


def test_duplicate_device_ip_names_both_devices():
    with pytest.raises(RankTableError) as err:
        load_rank_table(DATA / "bad_duplicate_ip.json")
    assert str(err.value) == (f"{DATA / 'bad_duplicate_ip.json'}: server '10.0.0.2' device '1': device_ip "
                              "192.168.100.111 is already used by server '10.0.0.1' device '0'")


def test_device_id_out_of_range_names_server_and_device_and_max_is_a_parameter():
    expected = r"server '10\.0\.0\.2' device '8': device_id must be an integer in 0\.\.7"
    with pytest.raises(RankTableError, match=expected):
        load_rank_table(DATA / "bad_device_id_range.json")
    assert world_size(load_rank_table(DATA / "bad_device_id_range.json", max_device_id=15)) == 4


def test_non_contiguous_ranks():
    with pytest.raises(RankTableError, match=r"contiguous 0\.\.3 over the 4 devices; missing \[3\]; "
                                             r"rank 5 of server '10\.0\.0\.2' device '1' is out of range"):
        load_rank_table(DATA / "bad_rank_gap.json")


def test_server_count_mismatch():
    with pytest.raises(RankTableError, match="'server_count' is '3' but server_list has 2 servers"):
        load_rank_table(DATA / "bad_server_count.json")


def test_non_string_value_is_rejected_like_hccl_tools_would_never_write_it():
    with pytest.raises(RankTableError, match=r"server '10\.0\.0\.1' device '1': 'rank_id' must be a string .* int 1"):
        load_rank_table(DATA / "bad_int_value.json")


def test_several_problems_are_reported_together():
    table = json.loads((DATA / "hccl_2s_16p.json").read_text())
    table["version"] = "2.0"
    table["server_list"][0]["device"][1]["device_id"] = "0"
    table["server_list"][1]["server_id"] = "10.0.0.1"
    with pytest.raises(RankTableError) as err:
        validate_rank_table(table, source="t.json")
    text = str(err.value)
    assert text.startswith("t.json: 3 problems:")
    assert "'version' must be \"1.0\"" in text
    assert "server '10.0.0.1' device '0': device_id listed twice on this server" in text
    assert "server '10.0.0.1': listed twice in server_list" in text


def test_build_rank_table_validates_what_it_builds():
    servers = [ServerSpec("a", ((0, "10.1.1.1"),)), ServerSpec("b", ((0, "10.1.1.1"),))]
    with pytest.raises(RankTableError, match="server 'b' device '0': device_ip 10.1.1.1 is already used"):
        build_rank_table(servers)


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(RankTableError, match="absent.json: cannot read rank table"):
        load_rank_table(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{\"version\": ")
    with pytest.raises(RankTableError, match="broken.json: not valid JSON"):
        load_rank_table(broken)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"version": "1.0", "server_count": "0", "server_list": [], "status": "completed"}))
    with pytest.raises(RankTableError, match="'server_list' must be a non-empty list"):
        load_rank_table(empty)


def test_queries_reject_unknown_rank_and_server():
    table = load_rank_table(DATA / "hccl_8p_01234567_10.0.0.1.json")
    assert local_ranks(table, "10.0.0.1") == list(range(8))
    with pytest.raises(RankTableError, match=r"no rank 8; ranks are 0\.\.7"):
        server_of_rank(table, 8)
    with pytest.raises(RankTableError, match=r"no server '10\.0\.0\.9'; servers are \['10\.0\.0\.1'\]"):
        local_ranks(table, "10.0.0.9")


def test_config_errors():
    with pytest.raises(RankTableError, match="'source' must be one of"):
        rank_table_from_config({"source": "nfs"})
    with pytest.raises(RankTableError, match=r"key\(s\) \['node_list'\] do not apply to source 'servers'"):
        rank_table_from_config({"source": "servers", "servers": [], "node_list": "a"})
    with pytest.raises(RankTableError, match="'max_device_id' must be a non-negative integer"):
        rank_table_from_config({"source": "servers", "servers": [{"server_id": "a", "device_count": 1}],
                                "max_device_id": "7"})


# ----------------------------------------------------------------------------- writing and the CLI


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    table = load_rank_table(DATA / "hccl_8p_01234567_10.0.0.1.json")
    path = write_rank_table(table, tmp_path / "cluster" / "rank_table.json")
    assert json.loads(path.read_text()) == table and path.read_text().startswith("{\n    \"version\"")
    before = path.read_text()
    with pytest.raises(TypeError):
        write_rank_table({"not": object()}, path)
    assert path.read_text() == before
    assert os.listdir(path.parent) == ["rank_table.json"]


def test_cli_config_json_as_the_workflow_rule_calls_it(capsys):
    cli = _cli_module()
    section = {"source": "servers", "servers": [{"server_id": "127.0.0.1", "device_count": 2}]}
    assert cli.main(["--config-json", json.dumps(section), "--output", "results/demo/cluster/rank_table.json"]) == 0
    table = load_rank_table("results/demo/cluster/rank_table.json")
    assert world_size(table) == 2
    assert "world size 2" in capsys.readouterr().out


def test_cli_flags_map_to_each_source(capsys):
    cli = _cli_module()
    assert cli.main(["--servers-json", str(DATA / "servers_2x8.json"), "--output", "a.json"]) == 0
    assert load_rank_table("a.json") == load_rank_table(DATA / "hccl_2s_16p.json")
    assert cli.main(["--hccn-conf", str(DATA / "hccn_node01.conf"), "--server-id", "10.0.0.1",
                     "--device-ids", "0,1", "--output", "b.json"]) == 0
    assert [d["device_ip"] for d in load_rank_table("b.json")["server_list"][0]["device"]] == \
        ["192.168.100.111", "192.168.101.111"]
    assert cli.main(["--from-slurm", "--node-list", "n[1-3]", "--device-count", "1", "--no-resolve-hosts",
                     "--output", "c.json"]) == 0
    assert [s["server_id"] for s in load_rank_table("c.json")["server_list"]] == ["n1", "n2", "n3"]
    assert cli.main(["--device-count", "2", "--server-id", "h", "--output", "d.json"]) == 0
    assert _rows(load_rank_table("d.json")) == [("h", "0", "0.0.0.0", "0"), ("h", "1", "0.0.0.0", "1")]


def test_cli_errors_exit_2_and_leave_the_existing_output_alone(capsys):
    cli = _cli_module()
    Path("out.json").write_text("previous")
    cases = [
        (["--servers-json", "[1]"], "servers[0]: expected a mapping"),
        (["--from-slurm", "--from-hccn-tool"], "pick one source"),
        (["--config-json", "{\"source\": \"servers\"}", "--from-slurm"], "drop ['--from_slurm']"),
        (["--config_json", "{bad"], "--config_json: not valid JSON"),
        ([], "no source"),
        (["--hccn-conf", str(DATA / "hccn_malformed.conf"), "--server-id", "s"], "hccn_malformed.conf: 3 problems"),
    ]
    for flags, message in cases:
        assert cli.main(flags + ["--output", "out.json"]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert Path("out.json").read_text() == "previous"


def test_cli_runs_as_a_script_and_documents_every_flag():
    done = subprocess.run([sys.executable, str(CLI), "--help"], capture_output=True, text=True, check=True)
    for flag in ("--config_json", "--servers_json", "--hccn_conf", "--from_hccn_tool", "--from_slurm",
                 "--device_count", "--device_ids", "--server_id", "--node_list", "--device_map",
                 "--no_resolve_hosts", "--max_device_id", "--output"):
        assert flag in done.stdout  # the dashed spellings the other tests use are the aliases


@pytest.mark.parametrize("section", [
    {"source": "servers", "servers": json.loads((DATA / "servers_2x8.json").read_text())},
    {"source": "hccn_conf", "hccn_conf": "hccn_2p.conf", "server_id": "10.0.0.1"},  # every device of the file
    {"source": "hccn_conf", "hccn_conf": str(DATA / "hccn_node01.conf"), "device_ids": [0, 1, 2], "server_id": "a"},
    {"source": "slurm", "device_map": str(DATA / "device_map.yaml"), "node_list": "node[02-03]",
     "resolve_hosts": False},
    {"source": "slurm", "device_count": 2, "node_list": "node[1-3]", "resolve_hosts": False},
])
def test_planned_topology_is_the_shape_of_the_table_built_later(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("hccn_2p.conf").write_text("address_0=192.168.100.101\naddress_1=192.168.101.101\n")
    servers = rank_table_from_config(section)["server_list"]
    assert planned_topology(section) == (len(servers), max(len(server["device"]) for server in servers))


def test_planned_topology_refuses_nodes_that_contradict_the_node_list():
    with pytest.raises(RankTableError, match=r"'nodes' is 2 but node_list 'n\[1-3\]' names 3 nodes"):
        planned_topology({"source": "slurm", "device_count": 8, "node_list": "n[1-3]", "nodes": 2})

