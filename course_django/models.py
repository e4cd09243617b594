"""The seed app's ``person`` table, as a Django model (peewee's ``models.seed()`` creates and fills it)."""
from django.db import models


class Person(models.Model):
    firstname = models.CharField(max_length=255)
    surname = models.CharField(max_length=255)

    class Meta:
        db_table = "person"
        managed = False
        app_label = "course_django"
