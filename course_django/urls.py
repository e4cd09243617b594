from django.urls import path

from course_django import views

urlpatterns = [
    path("<str:alias>/person/first", views.first_person),
    path("<str:alias>/connection_id", views.connection_id),
    path("<str:alias>/expire", views.expire),
]
