"""The seed app's page in Django: ``/<alias>/person/first``, through the database alias named."""
from django.db import connections
from django.http import JsonResponse

from course_django.models import Person


def first_person(request, alias):
    person = Person.objects.using(alias).order_by("id").first()
    return JsonResponse({"id": person.id, "firstname": person.firstname, "surname": person.surname})


def connection_id(request, alias):
    """The server's id of this thread's connection of ``alias``: what a ``KILL`` takes."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return JsonResponse({"id": cursor.fetchone()[0]})


def expire(request, alias):
    """The fault, through the app's own connection: its ``wait_timeout`` shortened to 1 s."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SET SESSION wait_timeout = 1")
        cursor.execute("SELECT CONNECTION_ID()")
        return JsonResponse({"id": cursor.fetchone()[0]})
