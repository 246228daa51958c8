"""The language Rein writes in, per user (users.language), taken from the Telegram client's language at first
contact; existing users get the nearest supported language of their stored language_code

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02 17:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0012'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The catalog languages when this revision was written (pipeline.i18n.LANGUAGES), for the backfill.
LANGUAGES = ("en", "es", "pt_BR", "de", "fr", "it", "ru", "uk", "tr", "ar")


def _nearest(language_code: str | None) -> str:
    base = (language_code or "en").replace("-", "_").split("_")[0].lower()
    return next((code for code in LANGUAGES if code.split("_")[0] == base), "en")


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False,
                                      server_default='en'))
    users = sa.table('users', sa.column('id', sa.Integer()), sa.column('language_code', sa.String()),
                     sa.column('language', sa.String()))
    connection = op.get_bind()
    codes = connection.execute(sa.select(users.c.language_code).where(users.c.language_code.is_not(None))
                               .distinct()).scalars().all()
    for code in codes:
        language = _nearest(code)
        if language != "en":
            connection.execute(users.update().where(users.c.language_code == code).values(language=language))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('language')
