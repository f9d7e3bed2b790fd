"""Processes and the instance: servers started with a bounded wait and stopped by PID (`procs`),
the run launcher with a worker health check (`launcher`), the PostgreSQL profile
(`postgres`), the Dask step executor (`cluster`) and the report-link redirect (`redirect`).
Below `lib/`: imports nothing else of the project."""
