"""Generate the Python code of the gRPC API from shared/proto/ (``make proto``), or check it is current.

    .local/venvs/protoc/bin/python .ci/generate_proto.py [--check]

The messages of ``featurestore/v1/feature_store.proto`` are compiled by grpcio-tools' protoc (pinned
in .ci/setup_infra_venvs.sh, which makes the ``protoc`` venv) into
``shared/feature_store_client/v1/feature_store_pb2.py`` and its ``.pyi``. The code is committed: the
client installs with nothing but protobuf, the server image needs no compiler, and
tests/grpc/test_proto_codegen.py runs ``--check``, which fails when regenerating would change a byte.
No ``_pb2_grpc.py`` is generated: its imports are absolute (``from featurestore.v1 import ...``) and
would need a top-level ``featurestore`` package, so the client and the server bind the service's
methods from its descriptor instead (feature_store_client/v1/__init__.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "shared" / "proto"
PROTO = "featurestore/v1/feature_store.proto"
OUT = ROOT / "shared" / "feature_store_client" / "v1"
GENERATED = ("feature_store_pb2.py", "feature_store_pb2.pyi")


def generate(into: Path) -> dict[str, bytes]:
    """The generated files' bytes, by name."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={into}", f"--pyi_out={into}",
                        str(PROTO_ROOT / PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {code})")
    made = into / Path(PROTO).parent
    return {name: (made / name).read_bytes() for name in GENERATED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed code differs")
    args = parser.parse_args()
    try:
        import grpc_tools  # noqa: F401
    except ModuleNotFoundError:
        raise SystemExit("grpcio-tools is not installed here: run .ci/setup_infra_venvs.sh and use "
                         ".local/venvs/protoc/bin/python") from None
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    stale = [name for name, data in fresh.items()
             if not (OUT / name).is_file() or (OUT / name).read_bytes() != data]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make proto`", file=sys.stderr)
            return 1
        print("generated code is current")
        return 0
    for name in stale:
        (OUT / name).write_bytes(fresh[name])
        print(f"wrote {(OUT / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
