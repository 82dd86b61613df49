// The service's clients over gRPC-Web, on the page's own origin. Every call
// carries the signed-in session's access token (held in memory only).
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { ApiTokenService } from "./gen/usermgmt/v1/api_token_service_pb";
import { AuditService } from "./gen/usermgmt/v1/audit_service_pb";
import { AuthService } from "./gen/usermgmt/v1/auth_service_pb";
import { ChangeService } from "./gen/usermgmt/v1/change_service_pb";
import { OrganisationService } from "./gen/usermgmt/v1/organisation_service_pb";
import { RoleService } from "./gen/usermgmt/v1/role_service_pb";
import { SessionService } from "./gen/usermgmt/v1/session_service_pb";
import { UserService } from "./gen/usermgmt/v1/user_service_pb";

let accessToken: string | undefined;

/** Sets (or clears) the access token every later call carries. */
export function useAccessToken(token: string | undefined): void {
  accessToken = token;
}

const withAccessToken: Interceptor = (next) => (request) => {
  if (accessToken !== undefined && !request.header.has("authorization")) {
    request.header.set("authorization", `Bearer ${accessToken}`);
  }
  return next(request);
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  interceptors: [withAccessToken],
});

function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

export const api = {
  auth: client(AuthService),
  users: client(UserService),
  organisation: client(OrganisationService),
  roles: client(RoleService),
  sessions: client(SessionService),
  apiTokens: client(ApiTokenService),
  audit: client(AuditService),
  changes: client(ChangeService),
};
