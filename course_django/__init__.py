"""A small Django project on the course's server (chapter 09): the seed app's ``Person`` page,
served by Django's own WSGI handler, with one database alias per way of holding connections.

    DJANGO_SETTINGS_MODULE=course_django.settings
"""
