"""Regenerate tests/data/rank_table/hccl_8p_01234567_10.0.0.1.json and hccl_2s_16p.json with the seed's own
tools: mindspore-ai/models utils/hccl_tools/hccl_tools.py (one server) and merge_hccl.py (the cluster).

Origin: those two files of the model zoo, run on the device IPs of tests/data/rank_table/hccn_node01.conf
(server 10.0.0.1) and hccn_node02.conf (server 10.0.0.2). hccl_tools.py asks `hccn_tool -i <id> -ip -g`
for each device; a stand-in hccn_tool placed first on PATH answers from those .conf files, as the real
one answers from the NPU's configuration. Needs only Python and the folder:

    python tests/reference/hccl_rank_tables.py --hccl_tools /path/to/models/utils/hccl_tools          # writes
    python tests/reference/hccl_rank_tables.py --hccl_tools /path/to/models/utils/hccl_tools --check  # compares

--check exits 1 unless the tools' output equals the stored files byte for byte.
"""
from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "rank_table"
SERVERS = {"10.0.0.1": DATA / "hccn_node01.conf", "10.0.0.2": DATA / "hccn_node02.conf"}
SINGLE = "hccl_8p_01234567_10.0.0.1.json"
MERGED = "hccl_2s_16p.json"

FAKE_HCCN_TOOL = f"""#!{sys.executable}
# stand-in for `hccn_tool -i <id> -ip -g`: prints ipaddr:<address_<id> of $HCCN_CONF>
import os, sys
device = sys.argv[sys.argv.index("-i") + 1]
for line in open(os.environ["HCCN_CONF"]):
    if line.startswith(f"address_{{device}}="):
        print("ipaddr:" + line.split("=", 1)[1].strip())
"""


def run_tools(tools: Path, work: Path) -> dict[str, bytes]:
    """{file name: bytes} of hccl_tools.py per server, then merge_hccl.py over both, in `work`."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "hccn_tool"
    fake.write_text(FAKE_HCCN_TOOL)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    singles = []
    for server, conf in SERVERS.items():
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HCCN_CONF": str(conf)}
        subprocess.run([sys.executable, str(tools / "hccl_tools.py"), "--device_num", "[0,8)", "--server_ip", server],
                       cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
        singles.append(f"hccl_8p_01234567_{server}.json")
    subprocess.run([sys.executable, str(tools / "merge_hccl.py"), *singles], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    return {name: (work / name).read_bytes() for name in (SINGLE, MERGED)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hccl_tools", required=True, type=Path,
                        help="the model zoo's utils/hccl_tools folder (hccl_tools.py, merge_hccl.py)")
    parser.add_argument("--check", action="store_true", help="compare with the stored files instead of writing")
    args = parser.parse_args()
    missing = [n for n in ("hccl_tools.py", "merge_hccl.py") if not (args.hccl_tools / n).is_file()]
    if missing:
        parser.error(f"--hccl_tools {args.hccl_tools}: missing {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as work:
        produced = run_tools(args.hccl_tools.resolve(), Path(work))
    if args.check:
        differ = [name for name, data in produced.items() if (DATA / name).read_bytes() != data]
        print(f"differ from the tools' output: {', '.join(differ)}" if differ else "identical bytes: "
              + ", ".join(produced))
        return 1 if differ else 0
    sys.path.insert(0, str(DATA.parents[2]))
    from vig.io import write_bytes  # stdlib only

    for name, data in produced.items():
        print(f"wrote {write_bytes(DATA / name, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
