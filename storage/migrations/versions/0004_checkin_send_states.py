"""Check-in sends: the reason a send ended as it did, and an index on the status for recovery passes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('checkin_sends', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_checkin_sends_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('checkin_sends', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkin_sends_status'))
        batch_op.drop_column('reason')
