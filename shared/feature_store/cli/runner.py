"""How every command line ends: an exit code and one sentence, never a traceback.

Exit codes: 0 done, 2 bad usage or input, 3 refused (permanent error), 4 a dependency is
unavailable (retry later), 130 interrupted (resumable work keeps its checkpoint).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from feature_store.errors import FeatureStoreError, InputError, SettingsError, TransientError

EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 2, 3, 4, 130


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body`` and turn its outcome into an exit code with a message on stderr."""
    try:
        return body() or EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run it again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InputError, SettingsError) as exc:
        print(f"{prog}: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except TransientError as exc:
        print(f"{prog}: unavailable [{exc.code}]: {exc.message}; try again", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except FeatureStoreError as exc:
        print(f"{prog}: refused [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
