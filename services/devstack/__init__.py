"""What ``make run`` does, as ``python -m services.devstack``.

- :mod:`.servers`: Postgres and Redis must answer; when a *default* URL does not, a private
  development server is started under ``var/`` (:mod:`.postgres_server`, :mod:`.redis_server`,
  both built on :mod:`.processes`) and stopped when ``make run`` ends;
- :mod:`.supervisor`: ``Procfile.dev`` under honcho, saying which process stopped first and why;
- :mod:`.__main__`: the sequence: servers, migrations, a development API key, the processes.
"""
