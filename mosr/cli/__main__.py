"""``python -m mosr.cli <verb>`` (and ``accelerate launch -m mosr.cli train ...``)."""

from mosr.cli import main

raise SystemExit(main())
