"""Jobs: work done off the serving path. The job rows and the worker process (``queue``, run as ``python -m modelport.jobs JOB_ID``) and the server side that claims and starts them (``runner``)."""
