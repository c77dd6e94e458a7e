"""The annotation service: people rank a round's candidate songs; rankings leave as the project's
rankings table (`reward_model.rankings.RANKINGS_SCHEMA`).

Modules: `models` and `migrations/` (the database), `db` (engines, migrations, transactions),
`round_source` (candidates and their audio from a round), `campaigns` (tasks, annotators,
progress), `assignments` (hand-out and web submissions), `checks` (one ranking's rules),
`uploads` with `upload_formats`/`upload_external` (ranking files: a pure parser), `imports`
(storing an upload), `export` (CSV/Parquet, snapshots), `settings`, `auth`, `limits`, `app` and
the `routes_*` modules (HTTP), `templates/` and `static/` (the pages).

Import `reward_model.service.app.create_app` to build the server; nothing heavy loads here.
"""
