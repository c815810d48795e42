/* The one error table: tw_strerror and tw_err_name both come from
 * TW_ERROR_TABLE in twine/base.h. */
#include <twine/base.h>

#define TW__ERROR_COUNT 19 /* codes 0 .. -18 */

static const char *const messages[TW__ERROR_COUNT] = {
#define TW__MSG(name, value, msg) [-(value)] = msg,
    TW_ERROR_TABLE(TW__MSG)
#undef TW__MSG
};

static const char *const names[TW__ERROR_COUNT] = {
#define TW__NAME(name, value, msg) [-(value)] = #name,
    TW_ERROR_TABLE(TW__NAME)
#undef TW__NAME
};

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
