"""SQLAlchemy 2 through SieveDB with the psycopg and asyncpg dialects: DDL, reflection, ORM."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    create_engine,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload


def make_models(prefix: str):
    """Fresh mapped classes whose tables carry ``prefix``, so each dialect has its own tables."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    class Author(Base):
        __tablename__ = f"{prefix}_author"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(80), unique=True)
        books: Mapped[list[Book]] = relationship(
            back_populates="author", cascade="all, delete-orphan", order_by="Book.id"
        )

    class Book(Base):
        __tablename__ = f"{prefix}_book"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey(f"{prefix}_author.id"))
        title: Mapped[str] = mapped_column(Text)
        price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
        in_print: Mapped[bool] = mapped_column(Boolean, default=True)
        published: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
        tags: Mapped[list[str]] = mapped_column(ARRAY(String(20)), default=list)
        extra: Mapped[dict] = mapped_column(JSONB, default=dict)
        notes: Mapped[dict | None] = mapped_column(JSON)
        ref: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=uuid.uuid4)
        author: Mapped[Author] = relationship(back_populates="books")

    return Base, Author, Book


EXPECTED_BOOK_COLUMNS = {
    "id": ("BIGINT", False),
    "author_id": ("INTEGER", False),
    "title": ("TEXT", False),
    "price": ("NUMERIC(10, 2)", True),
    "in_print": ("BOOLEAN", False),
    "published": ("TIMESTAMP WITH TIME ZONE", True),
    "tags": ("VARCHAR(20)[]", False),
    "extra": ("JSONB", False),
    "notes": ("JSON", True),
    "ref": ("UUID", False),
}

PUBLISHED = dt.datetime(2020, 5, 17, 12, 30, tzinfo=dt.UTC)


def check_columns(columns: list[dict]) -> None:
    dialect = postgresql.dialect()
    got = {c["name"]: (c["type"].compile(dialect=dialect), c["nullable"]) for c in columns}
    assert got == EXPECTED_BOOK_COLUMNS
    assert [c["name"] for c in columns] == list(EXPECTED_BOOK_COLUMNS)  # in table order


def check_fks(inspector, prefix: str) -> None:
    fks = inspector.get_foreign_keys(f"{prefix}_book")
    assert [(fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) for fk in fks] == [
        (["author_id"], f"{prefix}_author", ["id"])
    ]


def new_books(Book):
    return [
        Book(
            title="Dune",
            price=Decimal("9.99"),
            published=PUBLISHED,
            tags=["sf", "classic"],
            extra={"pages": 412},
            notes={"n": [1, 2]},
        ),
        Book(title="Children of Dune", price=None, in_print=False, tags=[]),
    ]


def test_psycopg_dialect(sieve_server, unique_name):
    prefix = unique_name("sa_pg")
    Base, Author, Book = make_models(prefix)
    url = f"postgresql+psycopg://postgres@{sieve_server.host}:{sieve_server.port}/postgres"
    engine = create_engine(url, pool_size=2)
    try:
        Base.metadata.create_all(engine)
        inspector = inspect(engine)
        assert {f"{prefix}_author", f"{prefix}_book"} <= set(inspector.get_table_names())
        check_columns(inspector.get_columns(f"{prefix}_book"))
        check_fks(inspector, prefix)
        assert engine.dialect.server_version_info[0] == 18

        with Session(engine) as session:
            author = Author(name="Frank Herbert", books=new_books(Book))
            session.add(author)
            session.commit()
            author_id = author.id

        with Session(engine) as session:
            author = session.get(Author, author_id)
            assert [b.title for b in author.books] == ["Dune", "Children of Dune"]
            dune = author.books[0]
            assert (dune.price, dune.in_print, dune.published, dune.tags, dune.extra, dune.notes) == (
                Decimal("9.99"),
                True,
                PUBLISHED,
                ["sf", "classic"],
                {"pages": 412},
                {"n": [1, 2]},
            )
            assert isinstance(dune.ref, uuid.UUID)
            assert author.books[1].price is None and author.books[1].in_print is False

            dune.price = Decimal("12.50")
            dune.extra = {**dune.extra, "edition": 2}
            session.delete(author.books[1])
            session.commit()

        with Session(engine) as session:
            rows = session.execute(
                select(Book.title, Book.price, Book.extra).where(Book.author_id == author_id)
            ).all()
            assert [tuple(r) for r in rows] == [("Dune", Decimal("12.50"), {"pages": 412, "edition": 2})]
            # a rolled-back change leaves no trace
            session.add(Book(author_id=author_id, title="Never"))
            session.flush()
            assert session.scalar(select(func.count()).select_from(Book)) == 2
            session.rollback()
            assert session.scalar(select(func.count()).select_from(Book)) == 1

            session.delete(session.get(Author, author_id))
            session.commit()
            assert session.scalar(select(func.count()).select_from(Author)) == 0
            assert session.scalar(select(func.count()).select_from(Book)) == 0
    finally:
        Base.metadata.drop_all(engine)
        remaining = set(inspect(engine).get_table_names())
        engine.dispose()
    assert not {f"{prefix}_author", f"{prefix}_book"} & remaining


def test_asyncpg_dialect(sieve_server, unique_name):
    # SQLAlchemy's asyncio layer needs greenlet (the sqlalchemy[asyncio] extra)
    pytest.importorskip(
        "greenlet", reason="greenlet is not installed: SQLAlchemy's asyncio extension needs it"
    )
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    prefix = unique_name("sa_apg")
    Base, Author, Book = make_models(prefix)
    url = f"postgresql+asyncpg://postgres@{sieve_server.host}:{sieve_server.port}/postgres"

    async def main():
        engine = create_async_engine(url, pool_size=2)
        make_session = async_sessionmaker(engine, expire_on_commit=False)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
                tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
                columns = await conn.run_sync(lambda c: inspect(c).get_columns(f"{prefix}_book"))
                await conn.run_sync(lambda c: check_fks(inspect(c), prefix))
            assert {f"{prefix}_author", f"{prefix}_book"} <= set(tables)
            check_columns(columns)

            async with make_session() as session:
                author = Author(name="Ursula K. Le Guin", books=new_books(Book))
                session.add(author)
                await session.commit()
                author_id = author.id

            async with make_session() as session:
                books = (
                    await session.scalars(select(Book).where(Book.author_id == author_id).order_by(Book.id))
                ).all()
                assert [b.title for b in books] == ["Dune", "Children of Dune"]
                dune = books[0]
                assert (dune.price, dune.published, dune.tags, dune.extra, dune.notes) == (
                    Decimal("9.99"),
                    PUBLISHED,
                    ["sf", "classic"],
                    {"pages": 412},
                    {"n": [1, 2]},
                )
                dune.title = "The Left Hand of Darkness"
                await session.delete(books[1])
                await session.commit()

            async with make_session() as session:
                titles = (await session.scalars(select(Book.title).where(Book.author_id == author_id))).all()
                assert titles == ["The Left Hand of Darkness"]
                session.add(Book(author_id=author_id, title="Never"))
                await session.flush()
                await session.rollback()
                assert await session.scalar(select(func.count()).select_from(Book)) == 1
                # (no lazy loads under asyncio: load the cascade's collection up front)
                author = await session.get(Author, author_id, options=[selectinload(Author.books)])
                await session.delete(author)
                await session.commit()
                assert await session.scalar(select(func.count()).select_from(Book)) == 0
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
        # Returning connections to the server: asyncpg's close() waits for the server to close
        # the socket after Terminate (see test_asyncpg.py::test_close_completes).
        try:
            await asyncio.wait_for(engine.dispose(), 5)
        except TimeoutError:
            pytest.fail("AsyncEngine.dispose() hung: the server kept the socket open after Terminate")

    asyncio.run(asyncio.wait_for(main(), 60))
