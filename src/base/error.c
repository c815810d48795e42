/* The one error table: tw_strerror and tw_err_name both come from
 * TW_ERROR_TABLE in twine/base.h. */
#include <twine/base.h>

static const char *const messages[] = {
#define TW__MSG(name, value, msg) [-(value)] = msg,
    TW_ERROR_TABLE(TW__MSG)
#undef TW__MSG
};

static const char *const names[] = {
#define TW__NAME(name, value, msg) [-(value)] = #name,
    TW_ERROR_TABLE(TW__NAME)
#undef TW__NAME
};

/* Codes 0 .. -(TW__ERROR_COUNT - 1): both arrays end at the table's last code. */
#define TW__ERROR_COUNT ((int)(sizeof messages / sizeof messages[0]))
_Static_assert(sizeof messages == sizeof names, "one table, two arrays");

const char *tw_strerror(int code)
{
    if (code > 0 || code <= -TW__ERROR_COUNT || !messages[-code])
        return "unknown error";
    return messages[-code];
}

const char *tw_err_name(int code)
{
    if (code > 0 || code <= -TW__ERROR_COUNT || !names[-code])
        return "TW_E?";
    return names[-code];
}

const char *tw_version(void) { return TW_VERSION_STRING; }
int tw_version_number(void) { return TW_VERSION_NUMBER; }
