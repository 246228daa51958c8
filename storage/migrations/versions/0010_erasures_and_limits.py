"""Erasures (a deleted user's Opik copies, retried until Opik confirms) and per-user limits (messages a day, the
last /export)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 17:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('opaque_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('thread_ids', sa.JSON(), nullable=False),
    sa.Column('trace_ids', sa.JSON(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('traces_deleted', sa.Integer(), nullable=False),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasures_opaque_id'), ['opaque_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasures_next_attempt_at'), ['next_attempt_at'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('messages_day', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('messages_today', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('exported_at')
        batch_op.drop_column('messages_today')
        batch_op.drop_column('messages_day')
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasures_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_erasures_opaque_id'))
    op.drop_table('erasures')
