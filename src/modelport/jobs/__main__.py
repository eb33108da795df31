"""``python -m modelport.jobs JOB_ID``: run one claimed job to its end (see :mod:`.queue`)."""

from modelport.jobs.queue import main

raise SystemExit(main())
