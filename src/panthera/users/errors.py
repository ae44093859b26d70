"""The users service's errors."""

from panthera.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class EmailAlreadyRegistered(Conflict):
    code = "email_already_registered"
    title = "User with email already exists"


class NotYourProfile(Forbidden):
    code = "not_your_profile"
    title = "Forbidden (cannot update another user's profile)"


class WeakPassword(InvalidInput):
    code = "weak_password"
    title = "Password does not meet the policy"


class InvalidAccountToken(InvalidInput):
    code = "invalid_token"
    title = "The link is invalid or has expired"


class LastAdministrator(Conflict):
    code = "last_administrator"
    title = "The last administrator cannot lose the ADMIN role"
