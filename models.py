"""The seed app's model: ``Person``, with the three people the seed tutorial shows."""
from peewee import CharField, Model

import config

SEED_PEOPLE = [("John", "Bob"), ("Jane", "Bob"), ("Michael", "Clark")]


class Person(Model):
    firstname = CharField()
    surname = CharField()

    class Meta:
        database = config.DATABASE


def seed(database=config.DATABASE):
    """Create the ``person`` table if needed and reset it to the seed's three rows, ids 1 to 3.

    Opens a connection for the work and closes it after, so it leaves no connection behind.
    """
    with database.connection_context(), Person.bind_ctx(database):
        database.create_tables([Person])
        database.execute_sql("TRUNCATE TABLE person")  # also restarts the ids at 1
        Person.insert_many(SEED_PEOPLE, fields=[Person.firstname, Person.surname]).execute()
